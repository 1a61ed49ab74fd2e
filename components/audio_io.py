"""Reading audio of any sample rate and channel count into float32 mono at a target rate.

Mono conversion: the mean of the channels, unless the channels cancel in it. A file whose
channels are out of phase (one wired inverted) averages to near silence although each channel
holds the voice; when the mean is more than `CANCEL_DB` quieter than the loudest channel and
that channel is audible, the loudest channel is used alone. Every stage and `predict` read
audio through this module, so a clip is heard the same way everywhere.
"""
import math
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

SILENCE_DBFS = -60.0
"""A signal whose RMS is below this carries nothing audible."""
CANCEL_DB = 20.0
"""The channel mean this much quieter than the loudest channel: the channels cancel."""


class AudioReadError(ValueError):
    """The file is missing, not decodable, truncated or empty."""


def probe(path: Path | str) -> tuple[float, int, int]:
    """(duration in seconds, sample rate, channels) from the header, without decoding."""
    try:
        info = sf.info(str(path))
    except Exception as exc:  # soundfile raises RuntimeError/LibsndfileError/TypeError
        raise AudioReadError(f"{path}: cannot read header ({exc})") from exc
    return float(info.frames) / float(info.samplerate), int(info.samplerate), int(info.channels)


def rms_dbfs(audio: np.ndarray) -> float:
    """RMS level in dB re full scale (-inf for no samples or digital silence)."""
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) if audio.size else 0.0
    return 20.0 * math.log10(rms) if rms > 0 else -math.inf


def downmix(audio: np.ndarray) -> tuple[np.ndarray, bool]:
    """(mono, cancelled) of a (frames,) or (frames, channels) array: the channel mean, or the
    loudest channel with cancelled=True when the channels cancel in the mean (module doc)."""
    if audio.ndim == 1 or audio.shape[1] == 1:
        return audio.reshape(len(audio)), False
    mean = audio.mean(axis=1)
    levels = [rms_dbfs(audio[:, c]) for c in range(audio.shape[1])]
    loudest = int(np.argmax(levels))
    if levels[loudest] >= SILENCE_DBFS and rms_dbfs(mean) < levels[loudest] - CANCEL_DB:
        return audio[:, loudest], True
    return mean, False


def to_mono(audio: np.ndarray) -> np.ndarray:
    """`downmix` without the flag."""
    return downmix(audio)[0]


def resample(audio: np.ndarray, sr: int, target_sr: int) -> np.ndarray:
    """Polyphase resampling (anti-aliased) from `sr` to `target_sr`."""
    if sr == target_sr:
        return audio
    g = np.gcd(int(sr), int(target_sr))
    return resample_poly(audio, target_sr // g, sr // g).astype(np.float32)


def read_audio(path: Path | str, target_sr: int | None = 16000) -> tuple[np.ndarray, int]:
    """Decode a whole file to float32 mono, resampled to `target_sr` (None keeps the file's rate)."""
    try:
        audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:
        raise AudioReadError(f"{path}: cannot decode ({exc})") from exc
    if audio.shape[0] == 0:
        raise AudioReadError(f"{path}: no samples")
    mono = to_mono(audio).astype(np.float32)
    if not np.all(np.isfinite(mono)):
        raise AudioReadError(f"{path}: samples are not finite")
    if target_sr is not None:
        mono, sr = resample(mono, sr, target_sr), target_sr
    return mono, int(sr)
