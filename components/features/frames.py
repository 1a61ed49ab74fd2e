"""Frame-level input of the audio encoder, and the shard files that hold it.

One row per 10 ms frame on the prosody frame grid (frame i centred at i * 10 ms, 25 ms Hann
window, 512-point FFT), so the F0 track computed for prosody is reused as it is.

Shards are safetensors files: one tensor per utterance (keyed by utt_id) plus JSON metadata
with the utterance order and the feature names. safetensors holds raw arrays and a JSON
header only (no pickle, nothing executable) and can read one utterance without reading the
rest of the file.
"""
from __future__ import annotations

import functools
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from safetensors import safe_open
from safetensors.numpy import save

from components.features.prosody import SR, WIN, F0Track, f0_track, frame_energy_db, frame_signal, n_frames

N_MELS = 80
N_FFT = 512
FRAME_FEATURE_NAMES: tuple[str, ...] = tuple(f"log_mel_{i:02d}" for i in range(N_MELS)) + (
    "log_f0",
    "voicing",
    "energy_db",
)
"""Column layout of `frame_features`:
0-79 `log_mel_00..79`: natural log of mel power (Slaney mel scale and norm, 0-8 kHz), floor 1e-10;
80 `log_f0`: ln(F0 in Hz), linearly interpolated through unvoiced frames (held at the ends),
0 when the clip has no voiced frame;
81 `voicing`: 1 voiced, 0 unvoiced;
82 `energy_db`: frame RMS in dBFS (floor -120)."""
LOG_F0, VOICING, ENERGY_DB = N_MELS, N_MELS + 1, N_MELS + 2
SHARD_FORMAT = "emoreason-frames-v1"


@functools.cache
def _mel_filters() -> np.ndarray:
    from transformers.audio_utils import mel_filter_bank

    return mel_filter_bank(
        num_frequency_bins=N_FFT // 2 + 1,
        num_mel_filters=N_MELS,
        min_frequency=0.0,
        max_frequency=SR / 2,
        sampling_rate=SR,
        norm="slaney",
        mel_scale="slaney",
    )


def log_mel(audio16k: np.ndarray) -> np.ndarray:
    """[T, 80] log mel power on the frame grid."""
    frames = frame_signal(audio16k) * np.hanning(WIN + 1)[:-1]  # periodic Hann
    power = np.abs(np.fft.rfft(frames, n=N_FFT, axis=1)) ** 2
    return np.log(np.maximum(power @ _mel_filters(), 1e-10))


def interpolated_log_f0(f0_hz: np.ndarray) -> np.ndarray:
    """ln F0 with unvoiced frames filled by linear interpolation; zeros when none is voiced."""
    voiced = np.flatnonzero(np.isfinite(f0_hz))
    if len(voiced) == 0:
        return np.zeros(len(f0_hz))
    return np.interp(np.arange(len(f0_hz)), voiced, np.log(f0_hz[voiced]))


def frame_features(audio16k: np.ndarray, track: F0Track | None = None) -> np.ndarray:
    """[T, 83] float32 encoder input (layout: FRAME_FEATURE_NAMES) of 16 kHz mono audio.

    Pass the `track` already computed for prosody on the same audio to reuse it.
    """
    audio = np.asarray(audio16k, dtype=np.float32)
    if audio.ndim != 1:
        raise ValueError(f"audio must be 16 kHz mono (1-D), got shape {audio.shape}")
    if track is None:
        track = f0_track(audio, SR)
    if len(track.f0_hz) != n_frames(len(audio)):
        raise ValueError(f"F0 track has {len(track.f0_hz)} frames, the audio {n_frames(len(audio))}")
    out = np.empty((len(track.f0_hz), len(FRAME_FEATURE_NAMES)), dtype=np.float32)
    out[:, :N_MELS] = log_mel(audio)
    out[:, LOG_F0] = interpolated_log_f0(track.f0_hz)
    out[:, VOICING] = track.voiced
    out[:, ENERGY_DB] = frame_energy_db(audio)
    return out


def write_shard(
    path: Path | str,
    items: list[tuple[str, np.ndarray]],
    feature_names: Sequence[str] = FRAME_FEATURE_NAMES,
) -> None:
    """Write (utt_id, [T, D] array) pairs to one safetensors shard, in the given order;
    D must match `feature_names` (stored in the shard's metadata)."""
    ids = [utt_id for utt_id, _ in items]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: duplicate utterance ids in one shard")
    for utt_id, array in items:
        if array.ndim != 2 or array.shape[1] != len(feature_names):
            raise ValueError(f"{path}: {utt_id} has shape {array.shape}, expected [T, {len(feature_names)}]")
    metadata = {"format": SHARD_FORMAT, "utt_ids": json.dumps(ids), "feature_names": json.dumps(list(feature_names))}
    data = save({utt_id: np.ascontiguousarray(array) for utt_id, array in items}, metadata=metadata)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(canonical_header(data))


def canonical_header(data: bytes) -> bytes:
    """A safetensors file whose JSON header has its keys sorted. safetensors writes the
    metadata in hash-map order, which changes from process to process: the same frames would
    give a new file hash on every run, and DVC would re-run every stage after features."""
    size = int.from_bytes(data[:8], "little")
    header = json.dumps(json.loads(data[8:8 + size]), sort_keys=True, separators=(",", ":"),
                        ensure_ascii=False).encode()
    # the same entries, re-ordered: as long as the original, whose padding is spaces
    return data[:8] + header.ljust(size, b" ") + data[8 + size:]


def iter_shard(path: Path | str) -> Iterator[tuple[str, np.ndarray]]:
    """(utt_id, array) pairs of a shard in written order, one utterance read at a time."""
    with safe_open(str(path), framework="numpy") as shard:
        metadata = shard.metadata() or {}
        if metadata.get("format") != SHARD_FORMAT:
            raise ValueError(f"{path}: not a frame-feature shard (format {metadata.get('format')!r})")
        for utt_id in json.loads(metadata["utt_ids"]):
            yield utt_id, shard.get_tensor(utt_id)


def load_frames(frames_dir: Path | str, utt_ids: set[str] | None = None) -> dict[str, np.ndarray]:
    """utt_id -> [T, 83] frame features from the features stage's shards."""
    frames_dir = Path(frames_dir)
    index_path = frames_dir / "index.parquet"
    if not index_path.exists():
        raise FileNotFoundError(f"frame index not found: {index_path} (run the features stage "
                                "with features.frames: true)")
    index = pd.read_parquet(index_path)
    wanted = index if utt_ids is None else index[index["utt_id"].isin(utt_ids)]
    out = {}
    for shard in sorted(set(wanted["shard"])):
        for utt_id, array in iter_shard(frames_dir / shard):
            if utt_ids is None or utt_id in utt_ids:
                out[utt_id] = array
    missing = sorted(set(wanted["utt_id"]) - set(out)) if utt_ids is None else \
        sorted(utt_ids - set(out))
    if missing:
        raise ValueError(f"no frame features for {len(missing)} clips, e.g. {missing[:3]}")
    return out
