"""The "base LM zero-shot" baseline: the SpeechLM class with LoRA off and no audio tokens,
prompted with the transcript and the prosody caption as text.

It measures what the LM makes of the cues before any training, so evaluation can show what SFT
and RL add. Its folder is a model folder like SFT's (`task.json` says `"inputs": "text"`) and
`emoreason predict` runs it on any WAV: the clip's transcript and caption are measured with the
features stage's own code against the training corpus's levels, saved beside the model (an
unknown speaker's F0 median is the clip's own).
"""
from __future__ import annotations

import json
import tempfile
from collections import Counter
from pathlib import Path

import pandas as pd
import torch

from components.config import FeaturesConfig, Params
from components.features.levels import load_levels
from components.prepare.schema import read_manifest
from components.speechlm.formats import build_prompt, parse_output
from components.speechlm.sft_data import spread


def text_prompt(transcript: str, caption: str, fmt: str, labels: list[str],
                audio_token: str) -> list[dict]:
    """The zero-shot SER prompt: the transcript and how it is said, no audio placeholders."""
    return build_prompt("ser", fmt, "asr", transcript, labels, 0, audio_token, prosody=caption)


@torch.no_grad()
def generate_text(model, tokenizer, prompts: list[list[dict]], max_new_tokens: int,
                  batch_size: int = 8) -> list[str]:
    """Greedy continuations of text-only chat prompts (left-padded batches)."""
    model.eval()
    texts = []
    for start in range(0, len(prompts), batch_size):
        batch = tokenizer.apply_chat_template(
            prompts[start:start + batch_size], add_generation_prompt=True, padding=True,
            return_tensors="pt", return_dict=True)
        out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)
        texts += tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:],
                                        skip_special_tokens=True)
    return texts


def dev_clips(features: Path | str, manifest: Path | str, n: int) -> tuple[pd.DataFrame, list[str], str]:
    """(`n` dev clips with a consensus label, spread over the split as SFT's evaluation picks
    them, the label set, the train majority label)."""
    df, meta = read_manifest(manifest)
    feats = pd.read_parquet(features, columns=["utt_id", "transcript", "prosody_caption"])
    rows = df[["utt_id", "split", "label"]].merge(feats, on="utt_id", validate="1:1")
    rows = rows[rows["label"].isin(meta.labels)]
    train = rows[rows["split"] == "train"]
    dev = rows[rows["split"] == "dev"]
    dev = dev.iloc[spread(len(dev), n)]
    if dev.empty or train.empty:
        raise ValueError(f"zero-shot evaluation needs labelled train and dev clips in {manifest}")
    return dev, list(meta.labels), Counter(train["label"]).most_common(1)[0][0]


def build_zero_shot(params: Params, out: Path) -> dict:
    """Save the zero-shot model folder to `out` and score it on the dev clips (eval.json, MLflow)."""
    import mlflow

    from components.config import as_dict
    from components.speechlm.io import build_speechlm, save_speechlm, write_task
    from components.tracking import stage_run

    cfg = params.zeroshot
    dev, labels, majority = dev_clips(cfg.features, cfg.manifest, cfg.eval_clips)
    with stage_run("zeroshot", params.tracking, {"zeroshot": as_dict(cfg)}):
        model, tokenizer = build_speechlm(cfg.lm, lora=False)
        prompts = [text_prompt(r.transcript or "", r.prosody_caption, cfg.format, labels,
                               model.config.audio_token) for r in dev.itertuples()]
        texts = generate_text(model, tokenizer, prompts, cfg.max_new_tokens)
        parsed = [parse_output(t, cfg.format, labels) for t in texts]
        truth = dev["label"].tolist()
        result = {
            "dev_clips": len(dev),
            "dev_accuracy": sum(p["label"] == y for p, y in zip(parsed, truth)) / len(dev),
            "dev_well_formed": sum(p["well_formed"] for p in parsed) / len(dev),
            "majority_label": majority,
            "majority_rate": sum(y == majority for y in truth) / len(dev),
            "predicted": dict(Counter(str(p["label"]) for p in parsed).most_common()),
        }
        save_speechlm(model, tokenizer, out)
        write_task(out, cfg.format, "asr", labels, params.features.asr, cfg.levels,
                   inputs="text")
        samples = {"utt_id": dev["utt_id"].tolist(), "label": truth,
                   "predicted": [str(p["label"]) for p in parsed], "output": texts}
        (out / "eval.json").write_text(json.dumps({**result, "samples": samples}, indent=2) + "\n")
        mlflow.log_metrics({k: result[k] for k in ("dev_accuracy", "dev_well_formed",
                                                    "majority_rate")})
        mlflow.log_table(samples, "dev_generations.json")
    print(f"zero-shot: dev accuracy {result['dev_accuracy']:.3f} (majority "
          f"{result['majority_rate']:.3f}), well-formed {result['dev_well_formed']:.3f} "
          f"on {len(dev)} clips")
    return result


def clip_cues(paths: list[Path], asr: str, levels_path: Path,
              speakers: list[str | None] | None = None) -> pd.DataFrame:
    """Features of arbitrary audio files (transcript, prosody, levels, caption, eGeMAPS),
    measured as the features stage does, against saved levels: those of the (first) training
    corpus and gender. Clips of a named speaker share the F0 search band; an unnamed clip is
    its own speaker."""
    from components.features.stage import build_features

    levels = load_levels(levels_path)
    corpus = min(levels["pause"])
    resolved = [Path(p).resolve() for p in paths]
    ids = [f"clip{i:05d}" for i in range(len(resolved))]
    df = pd.DataFrame({
        "utt_id": ids,
        "audio_path": [str(p.relative_to(p.anchor)) for p in resolved],
        "transcript": "", "corpus": corpus, "gender": min(levels["pitch"][corpus]),
        "split": "test",
        "speaker": [s if s else u for s, u in zip(speakers or [None] * len(ids), ids)],
    })
    with tempfile.TemporaryDirectory() as tmp:
        cfg = FeaturesConfig(workers=1, asr=asr, frames=False, cache_dir=str(Path(tmp) / "cache"))
        feats, _ = build_features(df, Path(resolved[0].anchor), cfg, Path(tmp), levels)
    return feats
