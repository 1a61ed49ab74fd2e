"""Prosody levels (low/normal/high, slow/normal/fast, ...) from cut points fitted on train.

Raw prosody values mean little across corpora and voices (a 200 Hz median is high for a man
and low for a child), so each value becomes a level relative to the training clips of its own
corpus: tertiles per corpus, and per corpus x gender for pitch. Only the training split is
used, so the dev and test clips never move a cut point.

Levels: `v < low cut` -> first name, `v > high cut` -> last name, else the middle name; NaN ->
`unknown`. Pauses are not tertiles (most clips have none): `none` when pause_ratio is 0,
else `some`/`many` split at the median pause ratio of the training clips that have pauses.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

LEVELS_FORMAT = "emoreason-levels-v1"
MIN_GROUP_SIZE = 30
"""A corpus x gender group with fewer finite training values gets its corpus's pitch cuts."""
UNKNOWN = "unknown"

TERTILE_LEVELS: dict[str, tuple[str, tuple[str, str, str]]] = {
    "pitch": ("f0_median_hz", ("low", "normal", "high")),
    "pitch_range": ("f0_range_st", ("narrow", "normal", "wide")),
    "energy": ("energy_dbfs", ("low", "normal", "high")),
    "rate": ("rate_sps", ("slow", "normal", "fast")),
}
"""level -> (prosody column, names low to high). Pitch is fitted per corpus x gender."""
PAUSE_COLUMN = "pause_ratio"
PAUSE_NAMES = ("none", "some", "many")


class LevelsError(ValueError):
    """Cut points cannot be fitted, or do not cover a row they are applied to."""


def _finite(values: pd.Series) -> np.ndarray:
    array = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
    return array[np.isfinite(array)]


def _tertiles(values: np.ndarray, what: str) -> dict:
    if len(values) < 3:
        raise LevelsError(f"cannot fit {what}: {len(values)} finite training values (need 3)")
    low, high = np.quantile(values, [1 / 3, 2 / 3])
    return {"cuts": [float(low), float(high)], "n": int(len(values))}


def _check_columns(df: pd.DataFrame, columns: list[str]) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise LevelsError(f"levels need columns {missing}")


def fit_levels(df: pd.DataFrame, min_group_size: int = MIN_GROUP_SIZE) -> dict:
    """Cut points from the rows with split == 'train' (a JSON-ready dict)."""
    columns = [col for col, _ in TERTILE_LEVELS.values()]
    _check_columns(df, ["corpus", "gender", "split", PAUSE_COLUMN, *columns])
    train = df[df["split"] == "train"]
    if train.empty:
        raise LevelsError("no training rows (split == 'train') to fit levels on")
    fitted: dict = {"format": LEVELS_FORMAT, "min_group_size": min_group_size}
    fitted.update({level: {} for level in (*TERTILE_LEVELS, "pause")})
    for corpus, rows in train.groupby("corpus", sort=True):
        corpus = str(corpus)
        for level, (column, _) in TERTILE_LEVELS.items():
            pooled = _tertiles(_finite(rows[column]), f"{level} levels of corpus {corpus!r}")
            if level != "pitch":
                fitted[level][corpus] = pooled
                continue
            fitted["pitch"][corpus] = {}
            for gender, group in rows.groupby("gender", sort=True):
                values = _finite(group[column])
                if len(values) >= min_group_size:
                    entry = {**_tertiles(values, f"pitch levels of {corpus!r} x {gender!r}"), "source": "gender"}
                else:
                    entry = {**pooled, "n_gender": int(len(values)), "source": "corpus"}
                fitted["pitch"][corpus][str(gender)] = entry
        pauses = _finite(rows[PAUSE_COLUMN])
        with_pauses = pauses[pauses > 0]
        fitted["pause"][corpus] = {
            "cut": float(np.median(with_pauses)) if len(with_pauses) else 0.0,
            "n": int(len(pauses)),
        }
    return fitted


def _level(value: float, cuts: list[float], names: tuple[str, str, str]) -> str:
    if not math.isfinite(value):
        return UNKNOWN
    if value < cuts[0]:
        return names[0]
    return names[2] if value > cuts[1] else names[1]


def _pause_level(value: float, cut: float) -> str:
    if not math.isfinite(value):
        return UNKNOWN
    if value <= 0:
        return PAUSE_NAMES[0]
    return PAUSE_NAMES[1] if value <= cut else PAUSE_NAMES[2]


def apply_levels(df: pd.DataFrame, cut_points: dict) -> pd.DataFrame:
    """A copy of `df` with pitch_level, pitch_range_level, energy_level, rate_level and
    pause_level; a corpus (or, for pitch, a gender) without cut points is a LevelsError."""
    columns = [col for col, _ in TERTILE_LEVELS.values()]
    _check_columns(df, ["corpus", "gender", PAUSE_COLUMN, *columns])
    out = df.copy()
    corpora = set(out["corpus"].astype(str))
    unknown = sorted(corpora - set(cut_points["pause"]))
    if unknown:
        raise LevelsError(f"no level cut points for corpus {unknown} (fitted: {sorted(cut_points['pause'])})")
    pairs = set(zip(out["corpus"].astype(str), out["gender"].astype(str)))
    missing = sorted(p for p in pairs if p[1] not in cut_points["pitch"][p[0]])
    if missing:
        raise LevelsError(f"no pitch cut points for corpus x gender {missing}")
    corpus, gender = out["corpus"].astype(str), out["gender"].astype(str)
    for level, (column, names) in TERTILE_LEVELS.items():
        values = pd.to_numeric(out[column], errors="coerce")
        if level == "pitch":
            cuts = [cut_points["pitch"][c][g]["cuts"] for c, g in zip(corpus, gender)]
        else:
            cuts = [cut_points[level][c]["cuts"] for c in corpus]
        out[f"{level}_level"] = [_level(v, cut, names) for v, cut in zip(values, cuts)]
    pauses = pd.to_numeric(out[PAUSE_COLUMN], errors="coerce")
    out["pause_level"] = [_pause_level(v, cut_points["pause"][c]["cut"]) for v, c in zip(pauses, corpus)]
    return out


def save_levels(path: Path | str, cut_points: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cut_points, indent=2, sort_keys=True) + "\n")


def load_levels(path: Path | str) -> dict:
    cut_points = json.loads(Path(path).read_text())
    if cut_points.get("format") != LEVELS_FORMAT:
        raise LevelsError(f"{path}: not a levels file (format {cut_points.get('format')!r})")
    return cut_points
