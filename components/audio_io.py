"""Reading audio of any sample rate and channel count into float32 mono at a target rate."""
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly


class AudioReadError(ValueError):
    """The file is missing, not decodable, truncated or empty."""


def probe(path: Path | str) -> tuple[float, int, int]:
    """(duration in seconds, sample rate, channels) from the header, without decoding."""
    try:
        info = sf.info(str(path))
    except Exception as exc:  # soundfile raises RuntimeError/LibsndfileError/TypeError
        raise AudioReadError(f"{path}: cannot read header ({exc})") from exc
    return float(info.frames) / float(info.samplerate), int(info.samplerate), int(info.channels)


def to_mono(audio: np.ndarray) -> np.ndarray:
    """Average channels; a (frames, channels) array becomes (frames,)."""
    return audio.mean(axis=1) if audio.ndim == 2 else audio


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
