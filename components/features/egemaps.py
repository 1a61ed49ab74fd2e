"""eGeMAPS v02 functionals (openSMILE): the 88 standard SER features of one utterance.

openSMILE fills every value with NaN when a clip is too short for its analysis windows (and
silence gives zeros and -201 dB floors, not NaN). This module returns the array as it is; the
caller flags non-finite values, so no value is replaced silently.
"""
from __future__ import annotations

import functools
import warnings

import numpy as np
import opensmile


@functools.cache
def _smile() -> opensmile.Smile:
    """One extractor per process (building it parses the openSMILE config)."""
    return opensmile.Smile(
        feature_set=opensmile.FeatureSet.eGeMAPSv02,
        feature_level=opensmile.FeatureLevel.Functionals,
    )


EGEMAPS_NAMES: tuple[str, ...] = tuple(_smile().feature_names)
"""The 88 functional names, in the order of `egemaps_functionals`' output."""


def egemaps_functionals(audio: np.ndarray, sr: int) -> np.ndarray:
    """[88] float32 eGeMAPS v02 functionals of mono `audio` at sample rate `sr`
    (all NaN when openSMILE finds the clip too short)."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise ValueError(f"audio must be mono (1-D), got shape {audio.shape}")
    if len(audio) == 0:
        return np.full(len(EGEMAPS_NAMES), np.nan, dtype=np.float32)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Segment too short")
        values = _smile().process_signal(audio, int(sr)).to_numpy(dtype=np.float32)
    if values.shape != (1, len(EGEMAPS_NAMES)):
        raise RuntimeError(f"openSMILE returned shape {values.shape}, expected (1, {len(EGEMAPS_NAMES)})")
    return values[0]


def zscore(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """(x - mean) / std per column, a constant column left unscaled; NaN stays NaN."""
    return (x - mean) / np.where(std > 1e-8, std, 1.0)
