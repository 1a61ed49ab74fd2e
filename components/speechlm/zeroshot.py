"""The "base LM zero-shot" baseline: the SpeechLM class with LoRA off and no audio tokens,
prompted with the transcript and the prosody caption as text.

It measures what the LM makes of the cues before any training, so evaluation can show what SFT
and RL add. Its folder is a model folder like SFT's (`task.json` says `"inputs": "text"`) and
`emoreason predict` runs it on any WAV: the clip's transcript and caption are measured with the
features stage's own code against the training corpus's levels, saved beside the model. The
speaker's gender is unknown, so the pitch cut points are those of the gender group nearest
the voice's F0 (`pitch_reference`).
"""
from __future__ import annotations

import json
import math
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from components.config import FeaturesConfig, Params
from components.device import resolve_device, to_device
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
    """Greedy continuations of text-only chat prompts (left-padded batches), on the model's
    device."""
    model.eval()
    device = next(model.parameters()).device
    texts = []
    for start in range(0, len(prompts), batch_size):
        batch = to_device(tokenizer.apply_chat_template(
            prompts[start:start + batch_size], add_generation_prompt=True, padding=True,
            return_tensors="pt", return_dict=True), device)
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
    device = resolve_device(params.base.device)  # a device the machine lacks fails first
    dev, labels, majority = dev_clips(cfg.features, cfg.manifest, cfg.eval_clips)
    with stage_run("zeroshot", params.tracking, {"zeroshot": as_dict(cfg)}):
        model, tokenizer = build_speechlm(cfg.lm, lora=False)
        model.to(device)
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


def pitch_reference(levels: dict, corpus: str, f0_hz: float | None) -> tuple[str, str]:
    """(gender group whose pitch cut points to use, what the output says about it) for a
    voice of F0 median `f0_hz` whose gender is unknown.

    Pitch levels are fitted per corpus x gender because a 200 Hz median is high for a man and
    low for a woman. The group is the one whose typical F0 (the geometric mean of its tertile
    cuts, about its median) is nearest the voice's in semitones: with the usual adult medians
    (about 120-130 Hz male, 210-220 Hz female) the boundary falls near 165 Hz, the threshold
    commonly used between them, but it comes from the training corpus's own voices. Groups
    without cut points of their own (too few clips) and `unknown` gender are not candidates.
    A voice far from its group's norm (a man shouting at 250 Hz) is misjudged; several clips
    of one speaker, judged by their common median, are safer than one clip.
    """
    groups = levels["pitch"][corpus]
    own = {g: e["cuts"] for g, e in groups.items()
           if e.get("source") == "gender" and g != "unknown"}
    if not own:
        return min(groups), "corpus (no gender-specific cut points)"
    if f0_hz is None or not math.isfinite(f0_hz) or f0_hz <= 0:
        return min(own), f"{min(own)}, by default (no voiced F0)"
    gender = min(own, key=lambda g: abs(math.log2(f0_hz / math.sqrt(own[g][0] * own[g][1]))))
    return gender, f"estimated {gender} (F0 {f0_hz:.0f} Hz)"


def clip_cues(paths: list[Path], asr: str, levels_path: Path,
              speakers: list[str | None] | None = None,
              transcripts: list[str | None] | None = None,
              frames: bool = False, speech_embedding: str = "none") -> pd.DataFrame:
    """Features of arbitrary audio files (transcript, prosody, levels, caption, eGeMAPS),
    measured as the features stage does, against saved levels: those of the (first) training
    corpus and, for pitch, of the gender group nearest each speaker's F0 median
    (`pitch_reference`, a column saying which). Clips of a named speaker share the F0 search
    band and the group; an unnamed clip is its own speaker. A clip's given transcript is its
    reference: `asr` transcribes only the others. With `frames`, a `frames` column holds
    each clip's frame features [T, 83] (float32; None for unreadable audio), computed from the
    same F0 track and stored at the same precision as the features stage's shards.
    `speech_embedding` as `features.speech_embedding` (raw only: a served clip's speaker is
    normalised from the model's saved statistics). Jitter, shimmer and HNR are not measured
    (NaN): no model input or served cue reads them, and they took half of the acoustic measuring time."""
    from components.features.extract import ClipJob, clip_f0_median
    from components.features.frames import load_frames
    from components.features.stage import build_features, speaker_medians

    levels = load_levels(levels_path)
    corpus = min(levels["pause"])
    resolved = [Path(p).resolve() for p in paths]
    ids = [f"clip{i:05d}" for i in range(len(resolved))]
    df = pd.DataFrame({
        "utt_id": ids,
        "audio_path": [str(p.relative_to(p.anchor)) for p in resolved],
        "transcript": [t or "" for t in transcripts or [None] * len(ids)],
        "corpus": corpus, "split": "test",
        "speaker": [s if s else u for s, u in zip(speakers or [None] * len(ids), ids)],
    })
    with tempfile.TemporaryDirectory() as tmp:
        cfg = FeaturesConfig(workers=1, asr=asr, frames=frames, speech_embedding=speech_embedding,
                             voice_quality=False, cache_dir=str(Path(tmp) / "cache"))
        # The features stage's F0 first pass; cached, so build_features reads it back.
        medians = [clip_f0_median(ClipJob(
            utt_id=u, audio=str(p), asr=asr, asr_on_reference=cfg.asr_on_reference,
            frames=cfg.frames, speech_embedding=speech_embedding,
            cache_dir=str(Path(cfg.cache_dir).resolve())))
            for u, p in zip(ids, resolved)]
        chosen = {speaker: pitch_reference(levels, corpus, f0)
                  for speaker, f0 in speaker_medians(df, medians).items()}
        df["gender"] = [chosen[s][0] for s in df["speaker"]]
        feats, _ = build_features(df, Path(resolved[0].anchor), cfg, Path(tmp), levels)
        if frames:
            stored = load_frames(Path(tmp) / "frames")
            feats["frames"] = [None if u not in stored else
                               np.asarray(stored[u], dtype=np.float32) for u in feats["utt_id"]]
    feats["pitch_reference"] = [chosen[s][1] for s in feats["speaker"]]
    return feats
