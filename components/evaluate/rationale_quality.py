"""How good a system's rationales are, read with the same rules that kept the teacher's.

A rationale is only useful when what it says about the voice was measured (grounding), when
it argues for the label the system gave (implied label), when it explains instead of
announcing the answer (leakage), and when the system does not repeat one stock sentence
(distinct bigrams) or loop on a phrase (loop rate). The rules are those of `components.distill.verify`, so a student is
judged exactly as its training data was filtered.
"""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from components.distill.records import ClipCues
from components.distill.stage import load_cues
from components.distill.verify import (
    acoustic_claims,
    clean_rationale,
    grounding,
    implied_label,
    leakage,
)
from components.evaluate.metrics import percentile_ci, resample_weights

RATIONALE_KEYS = ("grounding", "claims_per_rationale", "implied_label_match", "leakage_rate",
                  "mean_words", "distinct_2", "loop_rate", "with_rationale")
ROW_COLUMNS = ("has_rationale", "n_words", "n_claims", "n_checked", "n_agree", "implied_match",
               "leak", "loop", "text")
LOOP_NGRAM, LOOP_REPEATS = 3, 3
"""A rationale loops when one word 3-gram occurs 3 or more times in it."""
_WORDS = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)*")


def load_clip_cues(features: Path, manifest: Path, splits: list[str]) -> dict[str, ClipCues]:
    """utt_id -> cues of the clips in `splits`, built by the distill stage's `load_cues`.

    That builder keeps consensus clips only, so clips without a consensus have no cues here
    and their claims are left out of `grounding`."""
    return {c.utt_id: c for c in load_cues(features, manifest, splits)}


def rationale_rows(rationales: list[str | None], predicted: list[str | None],
                   cues: list[ClipCues | None], lead_words: int = 4,
                   labels: list[str] | None = None) -> pd.DataFrame:
    """One row per clip (columns `ROW_COLUMNS`), so that a bootstrap can resample clips.

    The rationale is cleaned first (reasoning blocks and markup dropped), as in distill.
    `n_checked` counts the claims of clips that have cues: a clip without cues has nothing
    to check its claims against. `labels` is the label set for the implied label (default:
    the cues')."""
    if not len(rationales) == len(predicted) == len(cues):
        raise ValueError("rationales, predicted and cues differ in length")
    if labels is None:
        labels = next((c.label_set for c in cues if c is not None), ())
    rows = []
    for text, label, clip in zip(rationales, predicted, cues):
        clean = clean_rationale(text if isinstance(text, str) else None)
        label = label if isinstance(label, str) and label else None
        if not clean:
            rows.append({"has_rationale": False, "n_words": 0, "n_claims": 0, "n_checked": 0,
                         "n_agree": 0, "implied_match": False, "leak": False, "loop": False,
                         "text": ""})
            continue
        claims = acoustic_claims(clean)
        n_agree = len(grounding(claims, clip)[1]["agree"]) if clip is not None else 0
        implied, _ = implied_label(clean, clip.label_set if clip is not None else labels)
        rows.append({
            "has_rationale": True,
            "n_words": len(clean.split()),
            "n_claims": len(claims),
            "n_checked": len(claims) if clip is not None else 0,
            "n_agree": n_agree,
            "implied_match": label is not None and implied == label,
            "leak": bool(leakage(clean, label, lead_words)),
            "loop": loops(clean),
            "text": clean,
        })
    return pd.DataFrame(rows, columns=list(ROW_COLUMNS))


def loops(text: str, n: int = LOOP_NGRAM, repeats: int = LOOP_REPEATS) -> bool:
    """Whether some word n-gram occurs `repeats` or more times in `text` (a repetition loop,
    e.g. "the contour is flat and the contour is flat and the contour is flat")."""
    words = _WORDS.findall(text.lower())
    grams = list(zip(*(words[i:] for i in range(n))))
    return bool(grams) and max(Counter(grams).values()) >= repeats


def distinct_n(texts, n: int = 2) -> float:
    """Distinct word n-grams / all word n-grams over the texts (Li et al., 2016), lower-cased;
    n-grams do not cross texts. Hand-written: no library in the stack has it."""
    seen, total = set(), 0
    for text in texts:
        words = _WORDS.findall(text.lower())
        grams = list(zip(*(words[i:] for i in range(n))))
        seen.update(grams)
        total += len(grams)
    return len(seen) / total if total else float("nan")


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def weighted_rationale_metrics(rows: pd.DataFrame, w: np.ndarray) -> dict[str, np.ndarray]:
    """The additive rationale metrics for each row of clip weights (resamples, clips);
    distinct_2 is left out, see `rationale_bootstrap_ci`."""
    w = np.atleast_2d(np.asarray(w, dtype=float))
    col = {c: rows[c].to_numpy(dtype=float) for c in ROW_COLUMNS if c != "text"}
    with_text = w @ col["has_rationale"]
    return {
        "grounding": _ratio(w @ col["n_agree"], w @ col["n_checked"]),
        "claims_per_rationale": _ratio(w @ col["n_claims"], with_text),
        "implied_label_match": _ratio(w @ col["implied_match"], with_text),
        "leakage_rate": _ratio(w @ col["leak"], with_text),
        "loop_rate": _ratio(w @ col["loop"], with_text),
        "mean_words": _ratio(w @ col["n_words"], with_text),
        "with_rationale": _ratio(with_text, w.sum(axis=1)),
    }


def summarize_rows(rows: pd.DataFrame) -> dict[str, float]:
    """`rationale_metrics` from per-clip rows (keys `RATIONALE_KEYS`)."""
    out = {k: float(v[0]) for k, v in weighted_rationale_metrics(rows, np.ones((1, len(rows))))
           .items()}
    out["distinct_2"] = distinct_n(rows.loc[rows["has_rationale"], "text"], 2)
    return {k: out[k] for k in RATIONALE_KEYS}


def rationale_metrics(rationales: list[str | None], predicted: list[str | None],
                      cues: list[ClipCues | None], lead_words: int = 4,
                      labels: list[str] | None = None) -> dict[str, float]:
    """Rationale quality of one system (keys `RATIONALE_KEYS`; NaN where not computable).

    grounding pools the claims of all rationales (a long rationale weighs more); the
    per-rationale shares and mean_words are over clips with a non-empty rationale;
    with_rationale is over all clips."""
    return summarize_rows(rationale_rows(rationales, predicted, cues, lead_words, labels))


def rationale_bootstrap_ci(rows: pd.DataFrame, n_boot: int = 1000, seed: int = 0,
                           alpha: float = 0.05) -> dict[str, list[float]]:
    """Percentile bootstrap over clips of the rationale metrics that are not NaN.

    Rows in the gold frame's clip order with the same seed resample the same clips as
    `metrics.bootstrap_ci`. distinct_2 gets no interval: a clip drawn twice repeats all its
    bigrams, so resampling with replacement biases it down."""
    point = summarize_rows(rows)
    samples = weighted_rationale_metrics(rows, resample_weights(len(rows), n_boot, seed))
    return {k: percentile_ci(v, alpha) for k, v in samples.items() if np.isfinite(point[k])}
