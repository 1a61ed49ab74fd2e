"""The utterance prosody vector behind the SpeechLM's prosody token: eGeMAPS functionals,
z-normalised over the speaker's clips.

Pitch, loudness and rate levels are relative to the speaker: a clip's own frames cannot say
whether its pitch is high *for this voice*, and speaker-normalised eGeMAPS was the strongest
single cue measured on real speech. Training reads the features stage's `egemaps_spknorm`. At
prediction time the speaker's statistics come from the clips given together when they are one
speaker's, else from the training population saved beside the model (global standardisation:
weaker, because the speaker is unknown). So that a served clip of an unknown speaker is not
out of distribution, a share of the training examples (`sft.population_norm_share`) gets the
population-normalised vector instead (`population_vectors`, the same `clip_vectors` as at
prediction time).

Features measured with `features.speech_embedding: moonshine` also hold a pretrained clip
embedding (`speech_embedding`, 832 numbers); the vector is then eGeMAPS followed by it, each
normalised the same way (`vector_names` says which a model was trained with).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from components.features.egemaps import EGEMAPS_NAMES, zscore

PROSODY_DIM = len(EGEMAPS_NAMES)
"""The prosody vector's length without a clip embedding."""
NORM_FILE = "prosody_norm.json"
EMBEDDING = "speech_embedding"
"""The features column of the optional clip embedding (`<column>_spknorm`: speaker-normalised)."""


def vector_names(features: pd.DataFrame) -> list[str]:
    """Names of the prosody vector's entries for these features: eGeMAPS, then the clip
    embedding's dimensions where the features have one."""
    names = list(EGEMAPS_NAMES)
    if EMBEDDING in features and len(features):
        names += [f"{EMBEDDING}_{i}" for i in range(len(features[EMBEDDING].iloc[0]))]
    return names


def raw_vectors(rows: pd.DataFrame, dim: int | None = None) -> np.ndarray:
    """[N, D] raw eGeMAPS of `rows`, followed by their clip embedding where they have one; with
    a model's `dim`, exactly what it takes (an error when the features cannot give it)."""
    return _joined(rows, "egemaps", EMBEDDING, dim)


def speaker_vectors(rows: pd.DataFrame, dim: int | None = None) -> np.ndarray:
    """[N, D] the features stage's speaker-normalised vectors of `rows`, finite (`dim` as for
    `raw_vectors`)."""
    return finite(_joined(rows, "egemaps_spknorm", f"{EMBEDDING}_spknorm", dim))


def _joined(rows: pd.DataFrame, egemaps: str, embedding: str, dim: int | None) -> np.ndarray:
    parts = [np.array(rows[egemaps].tolist(), dtype=np.float64).reshape(len(rows), -1)]
    if embedding in rows if dim is None else dim > PROSODY_DIM:
        if embedding not in rows:
            raise ValueError(f"this model's prosody vector has a clip embedding: the features "
                             f"need `{embedding}` (features.speech_embedding)")
        parts.append(np.array(rows[embedding].tolist(), dtype=np.float64).reshape(len(rows), -1))
    joined = np.concatenate(parts, axis=1)
    if dim is not None and joined.shape[1] != dim:
        raise ValueError(f"prosody vectors of {joined.shape[1]} numbers, the model takes {dim}")
    return joined


def finite(vectors: np.ndarray) -> np.ndarray:
    """float32 with NaN (a clip too short for openSMILE) set to the speaker mean, 0."""
    return np.nan_to_num(np.asarray(vectors, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)


def _rows(features: pd.DataFrame, utt_ids: set[str]) -> pd.DataFrame:
    rows = features[features["utt_id"].isin(utt_ids)]
    missing = sorted(utt_ids - set(rows["utt_id"]))
    if missing:
        raise ValueError(f"no eGeMAPS features for {len(missing)} clips, e.g. {missing[:3]}")
    return rows


def training_vectors(features: pd.DataFrame, utt_ids: set[str]) -> dict[str, np.ndarray]:
    """utt_id -> the features stage's speaker-normalised vector, made finite."""
    rows = _rows(features, utt_ids)
    return dict(zip(rows["utt_id"], speaker_vectors(rows)))


def population_vectors(features: pd.DataFrame, utt_ids: set[str], stats: dict,
                       ) -> dict[str, np.ndarray]:
    """utt_id -> the raw eGeMAPS normalised with the population statistics `stats`, as
    `clip_vectors` normalises a served clip whose speaker is unknown."""
    rows = _rows(features, utt_ids)
    vectors = clip_vectors(raw_vectors(rows), stats)
    return dict(zip(rows["utt_id"], vectors))


def population_stats(features: pd.DataFrame, utt_ids: set[str]) -> dict:
    """Mean and standard deviation of the raw vectors over the given (training) clips."""
    names = vector_names(features)
    raw = raw_vectors(features[features["utt_id"].isin(utt_ids)])
    return {"names": names, "n_clips": len(raw),
            "mean": np.nanmean(raw, axis=0).tolist(), "std": np.nanstd(raw, axis=0).tolist()}


def save_stats(folder: Path, stats: dict) -> None:
    (Path(folder) / NORM_FILE).write_text(json.dumps(stats) + "\n")


def load_stats(folder: Path) -> dict:
    path = Path(folder) / NORM_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: the model has a prosody token and needs the "
                                "training population's eGeMAPS statistics")
    stats = json.loads(path.read_text())
    names = stats.get("names") or []
    if names[:PROSODY_DIM] != list(EGEMAPS_NAMES) or any(
            not n.startswith(f"{EMBEDDING}_") for n in names[PROSODY_DIM:]):
        raise ValueError(f"{path} was written for other eGeMAPS features")
    return stats


def clip_vectors(raw: np.ndarray, stats: dict, speakers: list[str | None] | None = None,
                 ) -> np.ndarray:
    """[N, D] prosody vectors from raw rows (`raw_vectors`): normalised over each speaker's clips
    where a speaker is named with two clips or more (as in training), else with the training
    population's statistics (the speaker is unknown)."""
    raw = np.asarray(raw, dtype=np.float64)
    out = zscore(raw, np.asarray(stats["mean"]), np.asarray(stats["std"]))
    groups = pd.Series(list(speakers) if speakers is not None else [None] * len(raw))
    for speaker, rows in groups.groupby(groups, dropna=True).groups.items():
        if len(rows) > 1:
            own = raw[list(rows)]
            out[list(rows)] = zscore(own, np.nanmean(own, axis=0), np.nanstd(own, axis=0))
    return finite(out)
