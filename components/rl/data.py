"""The RL training rows: one per clip of `rl.splits` with a consensus label, holding the exact
prompt tokens the SFT model was trained on and everything the rewards read.

Columns (TRL passes every column to every reward function as a list):
- `utt_id`; `prompt` (the decoded prompt, for logs) and `prompt_ids` (its tokens, the SFT
  collator's, with one audio placeholder per soft token);
- `label` (the consensus), `annotator_labels` (every label an annotator chose, repeats kept),
  `label_set`, `format`, `transcript_source` (the SFT model's task);
- `cues`: the clip's `ClipCues` as JSON (measured levels, transcript), for the reasoning reward.
"""
from __future__ import annotations

import pandas as pd

from components.distill.records import ClipCues
from components.rl.rewards import cues_to_json
from components.speechlm.collate import AudioSource, SpeechCollator
from components.speechlm.sft_data import SftDataConfig, build_sft_examples, spread


def training_examples(features: pd.DataFrame, manifest: pd.DataFrame, fmt: str,
                      transcript_source: str, max_clips: int | None, seed: int,
                      prosody_caption: bool = False,
                      splits: list[str] | None = None) -> list[dict]:
    """SER examples of `splits` (default train; label-only targets: RL writes its own), at
    most `max_clips`, spread over their order; `prosody_caption` as the SFT model was
    trained (its task.json)."""
    cfg = SftDataConfig(fmt=fmt, transcript_source=transcript_source, perception_ratio=0.0,
                        population_norm_share=0.0, splits=splits or ["train"], seed=seed,
                        label_only_fallback=True, prosody_caption=prosody_caption)
    examples = build_sft_examples(features, manifest, [], cfg)
    if max_clips is not None:
        examples = [examples[i] for i in spread(len(examples), max_clips)]
    if not examples:
        raise ValueError(f"no clip of splits {cfg.splits} has a consensus label: nothing to "
                         "reinforce")
    return examples


def build_rows(examples: list[dict], source: AudioSource, collator: SpeechCollator,
               manifest: pd.DataFrame, cues: dict[str, ClipCues],
               label_set: list[str]) -> list[dict]:
    """The dataset rows of `examples` (see the module docstring); `cues`: utt_id -> cues
    (components.distill.stage.load_cues)."""
    annotators = manifest.set_index("utt_id")["annotator_labels"].to_dict() \
        if "annotator_labels" in manifest.columns else {}
    tokenizer = collator.tokenizer
    rows = []
    for example in examples:
        _, n_frames = source.batch([example["utt_id"]])
        ids = collator.prompt_ids(example, n_frames[0])
        if example["utt_id"] not in cues:
            raise ValueError(f"{example['utt_id']}: no measured cues (is it in the features?)")
        votes = annotators.get(example["utt_id"])
        rows.append({
            "utt_id": example["utt_id"],
            "prompt": tokenizer.decode(ids, skip_special_tokens=False),
            "prompt_ids": list(ids),
            "label": example["label"],
            "annotator_labels": [str(v) for v in votes] if votes is not None else [],
            "label_set": list(label_set),
            "format": example["fmt"],
            "transcript_source": example["transcript_source"],
            "cues": cues_to_json(cues[example["utt_id"]]),
        })
    return rows

