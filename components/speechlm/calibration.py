"""Temperature scaling of the label probabilities (Guo et al., 2017), fitted on dev clips
after training.

Fine-tuning on one gold label per clip makes the LM sure of its answers on speakers it never
heard, and GRPO sharpens any start further: on three RAVDESS speaker folds, SFT trained on hard
labels put more than 0.99 on its top label for 90% of the unseen actors' test clips, 142 of
them wrong. One temperature T divides the label log-probabilities before the softmax over the
label set; the label (the argmax) and every accuracy figure stay as they were. Fitted by
likelihood on the dev actors' clips and carried in the model folder's `task.json`
(`label_temperature`), which the serving predictor reads. Measured on those folds' 719 test
clips: hard-label SFT's Brier score 0.478 -> 0.393, its ECE 0.235 -> 0.046; the label-smoothed
default's ECE 0.143 -> 0.094 (`benchmarks/bench_calibration.py`).

Written here because scikit-learn's temperature calibration (`CalibratedClassifierCV`,
`method="temperature"`) calibrates an estimator it calls, and these scores come from a pass of
the LM over prompts; the fit is one bounded scalar minimisation (scipy).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from components.speechlm.formats import label_first
from components.speechlm.label_scores import labels_are_one_token, score_label_position

BOUNDS = (0.05, 20.0)
"""The temperatures searched: from 20x sharper to 20x flatter."""


def label_nll(log_probs: np.ndarray, gold: np.ndarray, temperature: float) -> float:
    """Mean negative log-likelihood of the gold labels under softmax(log_probs / T) over the
    label set ([N, labels] log-probabilities, [N] gold indices)."""
    z = np.asarray(log_probs, dtype=float) / temperature
    z = z - z.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(axis=1))
    return float(-(z[np.arange(len(z)), np.asarray(gold)] - log_norm).mean())


def fit_temperature(log_probs: np.ndarray, gold: np.ndarray) -> float:
    """The temperature in `BOUNDS` that minimises `label_nll` (searched on log T)."""
    from scipy.optimize import minimize_scalar

    log_probs = np.asarray(log_probs, dtype=float)
    if log_probs.ndim != 2 or len(log_probs) != len(gold) or not len(gold):
        raise ValueError(f"need [N, labels] log-probabilities and N gold labels, got "
                         f"{log_probs.shape} and {len(gold)}")
    found = minimize_scalar(lambda t: label_nll(log_probs, gold, float(np.exp(t))),
                            bounds=tuple(np.log(BOUNDS)), method="bounded",
                            options={"xatol": 1e-4})
    return float(np.exp(found.x))


def label_log_probs(model, tokenizer, rows: list[dict],
                    audio_for: Callable[[list[str]], dict], device: torch.device,
                    batch_size: int = 8) -> np.ndarray:
    """[N, labels] each label token's log-probability over the vocabulary at the label's
    position (`components.speechlm.label_scores` rows): what the serving predictor softmaxes
    over the label set."""
    out = score_label_position(
        model, tokenizer, rows, audio_for, device,
        lambda logits, tokens, gold: logits.log_softmax(-1).gather(1, tokens).tolist(),
        needs="calibration", batch_size=batch_size)
    return np.asarray(out, dtype=float).reshape(len(rows), -1)


def scorable(tokenizer, labels: list[str], fmt: str, transcript_source: str) -> bool:
    """The label is scored right after the prompt (label-first format) and each label is one
    token there: the case the serving predictor scores in one forward pass."""
    return label_first(fmt, transcript_source) and labels_are_one_token(
        tokenizer, labels, fmt, transcript_source)


def example_rows(examples: list[dict], collator) -> list[dict]:
    """`label_scores` rows of the SER examples with a label, one per clip: the prompts the
    model was trained on (`collator`: the SpeechCollator of its task)."""
    rows, seen = [], set()
    for e in examples:
        if e["task"] != "ser" or not e.get("label") or e["utt_id"] in seen:
            continue
        seen.add(e["utt_id"])
        rows.append({"utt_id": e["utt_id"], "label": e["label"],
                     "label_set": collator.label_set, "format": e["fmt"],
                     "transcript_source": e["transcript_source"],
                     "prompt_ids": collator.prompt_ids(e, collator.source.n_frames(e["utt_id"]))})
    return rows


def calibrate(model, collator, examples: list[dict], device: torch.device,
              shard: Callable[[Callable[[list[int]], list], int], np.ndarray] | None = None,
              ) -> dict | None:
    """The label temperature of `model` fitted on the SER `examples` (dev clips, prosody
    normalised over their speaker as the evaluate stage feeds them) and the NLL it buys
    (`calibration_summary`), or None where it cannot be fitted: no labelled clip, a format
    whose label follows the model's own writing, or labels longer than one token.
    `shard(score, n)`: scores rows 0..n-1 (`score(indices) -> values`), e.g. split among
    data-parallel workers; default: all here."""
    rows = example_rows(examples, collator)
    if not rows or not scorable(collator.tokenizer, collator.label_set, rows[0]["format"],
                                rows[0]["transcript_source"]):
        return None

    def score(indices: list[int]) -> list:
        return label_log_probs(model, collator.tokenizer, [rows[i] for i in indices],
                               lambda ids: collator.source.batch(ids)[0], device).tolist()

    log_probs = shard(score, len(rows)) if shard else np.asarray(score(list(range(len(rows)))))
    gold = np.array([collator.label_set.index(r["label"]) for r in rows])
    return calibration_summary(log_probs, gold)


def calibrate_folder_task(model, tokenizer, task: dict, features: str, frames: str,
                          manifest: str, device: torch.device, seed: int = 0,
                          split: str = "dev", shard=None) -> dict | None:
    """`calibrate` on the clips of `split` for a model trained on `task` (a model folder's
    task.json), its prompts built as the SFT stage builds them from the features table, frame
    shards and manifest at these paths; `shard` as `calibrate`'s."""
    import pandas as pd

    from components.prepare.schema import read_manifest
    from components.speechlm.collate import AudioSource, SpeechCollator
    from components.speechlm.sft_data import SftDataConfig, build_sft_examples

    if not scorable(tokenizer, task["labels"], task["format"], task["transcript_source"]):
        return None  # before reading any clip
    table, meta = read_manifest(manifest)
    feats = pd.read_parquet(features)
    cfg = SftDataConfig(fmt=task["format"], transcript_source=task["transcript_source"],
                        perception_ratio=0.0, population_norm_share=0.0, splits=[split],
                        seed=seed, label_only_fallback=True,
                        prosody_caption=task.get("prosody_caption", False))
    examples = build_sft_examples(feats, table, [], cfg)
    source = AudioSource.from_features(model, frames, table, meta.data_root,
                                       {e["utt_id"] for e in examples}, feats)
    return calibrate(model, SpeechCollator(tokenizer, source, task["labels"]), examples, device,
                     shard)


def calibration_summary(log_probs: np.ndarray, gold: np.ndarray) -> dict:
    """{label_temperature, calibration_clips, calibration_nll_before, calibration_nll_after}
    of the fitted temperature on these clips."""
    temperature = fit_temperature(log_probs, gold)
    return {"label_temperature": temperature, "calibration_clips": len(gold),
            "calibration_nll_before": label_nll(log_probs, gold, 1.0),
            "calibration_nll_after": label_nll(log_probs, gold, temperature)}


def announce(stage: str, fitted: dict | None, show: bool = True) -> dict:
    """Print what the calibration of `stage` did (when `show`: one worker of several says it)
    and return the fields for its summary ({"label_temperature": None} where nothing was
    fitted)."""
    if not show:
        return fitted or {"label_temperature": None}
    if fitted is None:
        print(f"{stage}: label probabilities not calibrated (no labelled dev clip, or the "
              "model's format does not score the label right after the prompt, or a label is "
              "more than one token)", flush=True)
        return {"label_temperature": None}
    print(f"{stage}: label temperature {fitted['label_temperature']:.3f} fitted on "
          f"{fitted['calibration_clips']} dev clips (NLL {fitted['calibration_nll_before']:.3f}"
          f" -> {fitted['calibration_nll_after']:.3f})", flush=True)
    return fitted
