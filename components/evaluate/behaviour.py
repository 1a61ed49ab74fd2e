"""Behavioural tests of a trained model: what it must do whatever its accuracy (CheckList,
Ribeiro et al. 2020; the `tests/model/` habit of Made-With-ML).

- invariance: the same clip at 48 kHz, as stereo, and with 0.5 s of silence added keeps its
  label, and no label's probability moves by more than a tolerance;
- directional: a low-arousal clip made louder and higher-pitched moves probability mass to the
  high-arousal labels, and what the rationale then says of pitch and loudness agrees with what
  is measured on the changed clip;
- minimum functionality: clear acted clips of each class get their label.

Every clip goes through `serve.rows.predict_rows`, the path of `emoreason predict` and
serving: files are written and read back as a user's would be.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from components.audio_io import resample
from components.distill.records import LEVEL_FIELDS, ClipCues
from components.distill.verify import acoustic_claims, grounding
from components.features.prosody import SR

HIGH_AROUSAL = frozenset({"angry", "anger", "happy", "happiness", "fear", "fearful", "surprise",
                          "surprised"})
LOW_AROUSAL = frozenset({"neutral", "calm", "sad", "sadness"})
VARIANTS = ("48khz", "stereo", "silence")


@dataclass
class Clip:
    path: Path
    label: str
    transcript: str | None = None
    """Given: no speech recognition (the suite tests the model, not the recogniser)."""


def variant(audio: np.ndarray, name: str) -> tuple[np.ndarray, int]:
    """(samples, rate) of a 16 kHz mono clip as one of `VARIANTS`."""
    if name == "48khz":
        return resample(audio, SR, 48000), 48000
    if name == "stereo":
        return np.stack([audio, audio], axis=1), SR
    if name == "silence":
        return np.concatenate([audio, np.zeros(SR // 2, dtype=audio.dtype)]), SR
    raise ValueError(f"unknown variant {name!r}; one of {VARIANTS}")


def aroused(audio: np.ndarray, semitones: float = 4.0, gain_db: float = 8.0) -> np.ndarray:
    """The clip with its pitch raised by `semitones` (Praat's PSOLA "Change gender" with the
    formants kept) and `gain_db` louder, the gain cut where it would clip."""
    import parselmouth
    from parselmouth.praat import call

    sound = parselmouth.Sound(audio.astype(np.float64), sampling_frequency=SR)
    pitch = call(sound, "To Pitch", 0.0, 75, 600)
    median = call(pitch, "Get quantile", 0, 0, 0.5, "Hertz")
    if not np.isfinite(median) or median <= 0:
        raise ValueError("no pitch found: the clip cannot be made higher-pitched")
    shifted = call(sound, "Change gender", 75, 600, 1.0, median * 2 ** (semitones / 12), 1.0,
                   1.0).values[0]
    peak = float(np.max(np.abs(shifted))) or 1.0
    return (shifted * min(10 ** (gain_db / 20), 0.99 / peak)).astype(np.float32)


def _mass(probabilities: dict, labels: frozenset) -> float:
    return float(sum(p for k, p in probabilities.items() if k in labels))


def _cues(result: dict, labels: list[str]) -> ClipCues:
    levels = {k: result["cues"][k] for k in LEVEL_FIELDS if result["cues"].get(k)}
    return ClipCues(utt_id="", transcript="", label=result["label"], label_set=tuple(labels),
                    levels=levels)


def _predict(predict: Callable, items: list[tuple[np.ndarray, int, str | None]],
             folder: Path) -> list[dict]:
    """Write each (samples, rate, transcript) as a WAV and predict them all in one call."""
    paths = []
    for audio, rate, _ in items:
        handle, path = tempfile.mkstemp(suffix=".wav", dir=folder)
        os.close(handle)
        sf.write(path, audio, rate, subtype="FLOAT")
        paths.append(path)
    results = predict(paths, [t for _, _, t in items])
    for path, result in zip(paths, results):
        if result.get("error"):
            raise RuntimeError(f"{path}: {result['error']}")
    return results


def run_suite(predict: Callable[[list[str], list[str | None]], list[dict]], labels: list[str],
              invariance: list[Clip], directional: list[Clip], functionality: list[Clip],
              tolerance: float = 0.1) -> dict:
    """Pass rates of the three kinds of test, with the failing cases.

    `predict(paths, transcripts)` answers as `predict_rows` does (label, probabilities,
    rationale, cues, error). A directional case passes when the high-arousal probability mass
    rises; its cue case (counted over changed clips whose rationale speaks of pitch or
    loudness) when those claims agree with the changed clip's measured levels."""
    from components.audio_io import read_audio

    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        sources = [read_audio(c.path, SR)[0] for c in invariance]
        base = _predict(predict, [(a, SR, c.transcript) for a, c in zip(sources, invariance)],
                        folder)
        for name in VARIANTS:
            changed = _predict(predict, [(*variant(a, name), c.transcript)
                                         for a, c in zip(sources, invariance)], folder)
            fails = []
            for clip, a, b in zip(invariance, base, changed):
                shift = max(abs(a["probabilities"][k] - b["probabilities"][k]) for k in labels)
                if a["label"] != b["label"] or shift > tolerance:
                    fails.append({"clip": str(clip.path), "label": a["label"],
                                  "changed_label": b["label"], "max_shift": round(shift, 3)})
            out[f"invariance_{name}"] = _rate(len(invariance), fails)

        sources = [read_audio(c.path, SR)[0] for c in directional]
        base = _predict(predict, [(a, SR, c.transcript) for a, c in zip(sources, directional)],
                        folder)
        changed = _predict(predict, [(aroused(a), SR, c.transcript)
                                     for a, c in zip(sources, directional)], folder)
        high = HIGH_AROUSAL & set(labels)
        fails, cue_fails, with_claims = [], [], 0
        for clip, a, b in zip(directional, base, changed):
            before, after = _mass(a["probabilities"], high), _mass(b["probabilities"], high)
            if after <= before:
                fails.append({"clip": str(clip.path), "high_arousal_before": round(before, 3),
                              "high_arousal_after": round(after, 3)})
            claims = [c for c in acoustic_claims(b.get("rationale") or "")
                      if c.cue in ("pitch", "energy")]
            if claims:
                with_claims += 1
                details = grounding(claims, _cues(b, labels))[1]
                if details["contradict"] or details["unsupported"]:
                    cue_fails.append({"clip": str(clip.path), "rationale": b["rationale"],
                                      "measured": {k: b["cues"].get(k) for k in
                                                   ("pitch_level", "energy_level")}})
        out["directional_arousal"] = _rate(len(directional), fails)
        out["directional_cues"] = _rate(with_claims, cue_fails)

        results = _predict(predict, [(read_audio(c.path, SR)[0], SR, c.transcript)
                                     for c in functionality], folder)
        fails = [{"clip": str(c.path), "label": c.label, "predicted": r["label"]}
                 for c, r in zip(functionality, results) if r["label"] != c.label]
        out["minimum_functionality"] = _rate(len(functionality), fails)
        out["minimum_functionality"]["per_class"] = {
            label: sum(r["label"] == label for c, r in zip(functionality, results)
                       if c.label == label) / n
            for label in labels if (n := sum(c.label == label for c in functionality))}
    return out


def _rate(n: int, fails: list[dict]) -> dict:
    return {"n": n, "passed": n - len(fails), "pass_rate": (n - len(fails)) / n if n else None,
            "failures": fails}
