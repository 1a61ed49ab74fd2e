"""Turning what a client sends (a file path, base64 text or raw bytes) into 16 kHz mono float32.

Every way an input can be unusable ends in an `AudioInputError` whose message names the
problem, so a served batch can answer that row with its own error and go on with the others.
Silent or clipped audio is not an error: the model still answers, and the caller gets a flag
saying what the answer is about. Channels are mixed down by `components.audio_io.downmix`.

A string is a path only when that file exists; otherwise it must be base64 whose decoded bytes
start with a known audio header. This keeps a short base64 string from being read as a file
name and a mistyped path from being decoded as garbage audio. A server, which must not open
files named by its clients, turns values into bytes with `audio_bytes` first.
"""
from __future__ import annotations

import base64
import binascii
import io
import math
import os
import re
from pathlib import Path

import numpy as np
import soundfile as sf

from components.audio_io import SILENCE_DBFS, downmix, resample, rms_dbfs
from components.features.prosody import CLIP_LEVEL, CLIP_SHARE

SAMPLE_RATE = 16000
SILENT = "silent"
"""Flag: the clip's RMS is below `SILENCE_DBFS`."""
STEREO_CANCELLED = "stereo_cancelled"
"""Flag: the channels cancel in their mean (out of phase); the loudest one was used instead."""
CLIPPED = "clipped"
"""Flag: more samples than the features stage allows sit at full scale (distorted loudness and
voice quality cues)."""

_MAX_PATH_CHARS = 4096
_DATA_URI = re.compile(r"^data:[\w/+.-]*;base64,", re.IGNORECASE)
_HEADERS: tuple[tuple[bytes, str], ...] = (
    (b"RIFF", "WAV"), (b"RIFX", "WAV"), (b"RF64", "RF64"), (b"riff", "W64"), (b"fLaC", "FLAC"),
    (b"OggS", "OGG"), (b"FORM", "AIFF"), (b".snd", "AU"), (b"caff", "CAF"),
    (b"NIST_1A", "NIST"), (b"ID3", "MP3"),
)
_MP3_SYNC = (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2", b"\xff\xfa")


class AudioInputError(ValueError):
    """An input cannot be used as audio; the message says why."""


def audio_format(data: bytes) -> str | None:
    """The container named by the first bytes (WAV, FLAC, OGG, ...), or None."""
    for magic, name in _HEADERS:
        if data.startswith(magic):
            return name
    return "MP3" if data[:2] in _MP3_SYNC else None


def _existing_file(value: str | Path) -> Path | None:
    """`value` as a path when such a file exists (a long base64 string is never probed)."""
    text = str(value)
    if not text or len(text) > _MAX_PATH_CHARS or "\0" in text or "\n" in text:
        return None
    try:
        path = Path(text).expanduser()
        return path if path.exists() else None
    except (OSError, ValueError):
        return None


def _b64decode(text: str) -> bytes | None:
    """Standard or URL-safe base64 (a `data:...;base64,` prefix and whitespace allowed)."""
    body = "".join(_DATA_URI.sub("", text.strip(), count=1).split())
    if not body:
        return None
    body += "=" * (-len(body) % 4)
    for altchars in (None, b"-_"):
        try:
            return base64.b64decode(body, altchars=altchars, validate=True)
        except (binascii.Error, ValueError):
            continue
    return None


def _looks_like_path(text: str) -> bool:
    """Rooted, dot-relative, home or drive-letter paths, or a name with a file suffix."""
    return len(text) < 512 and bool(
        text.startswith(("/", "./", "../", "~", os.sep)) or re.match(r"^[A-Za-z]:[\\/]", text)
        or re.search(r"\.[A-Za-z0-9]{2,5}$", text))


def _no_value(value) -> bool:
    """None, NaN (a missing cell) or blank text."""
    return value is None or (isinstance(value, float) and math.isnan(value)) or \
        (isinstance(value, str) and not value.strip())


def _source(value) -> tuple[str | io.BytesIO, str]:
    """(what soundfile opens, how to name it in messages)."""
    if _no_value(value):
        raise AudioInputError("no audio given (the value is empty)")
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = audio_bytes(value)
        return io.BytesIO(data), f"{len(data)} bytes of audio"
    if isinstance(value, Path):
        if not value.exists():
            raise AudioInputError(f"no such file: {value}")
        return _file(value), str(value)
    if not isinstance(value, str):
        raise AudioInputError(f"expected a file path, base64 text or bytes, "
                              f"got {type(value).__name__}")
    path = _existing_file(value)
    if path is not None:
        return _file(path), str(path)
    decoded = _b64decode(value)
    if decoded is not None and audio_format(decoded):
        return io.BytesIO(decoded), f"base64 audio ({len(decoded)} bytes)"
    if _looks_like_path(value):
        raise AudioInputError(f"no such file: {value}")
    if decoded is not None and len(value.strip()) >= 64:
        raise AudioInputError(_not_audio(decoded))
    raise AudioInputError(f"neither an existing file nor base64 audio: {_preview(value)}")


def _preview(text: str) -> str:
    return repr(text[:40] + ("..." if len(text) > 40 else ""))


def _not_audio(data: bytes) -> str:
    return (f"base64 data of {len(data)} bytes is not audio: it does not start with a known "
            "audio header (WAV, FLAC, OGG, AIFF, AU, CAF, MP3)")


def audio_bytes(value) -> bytes:
    """The audio bytes of raw bytes or base64 text, never reading a file: what a server that
    must not open paths named by its clients accepts. Bytes that hold base64 text are decoded."""
    if _no_value(value):
        raise AudioInputError("no audio given (the value is empty)")
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        if not data:
            raise AudioInputError("empty audio bytes")
        if audio_format(data) is None:
            decoded = _b64decode(data.decode("ascii", errors="replace"))
            if decoded and audio_format(decoded):
                return decoded
        return data
    if not isinstance(value, str):
        raise AudioInputError(f"expected base64 text or bytes, got {type(value).__name__}")
    decoded = _b64decode(value)
    if decoded is not None and audio_format(decoded):
        return decoded
    if decoded is None or _looks_like_path(value):
        raise AudioInputError(f"not base64 audio (file paths are not read here): "
                              f"{_preview(value)}")
    raise AudioInputError(_not_audio(decoded))


def _file(path: Path) -> str:
    if not path.is_file():
        raise AudioInputError(f"{path} is not a regular file")
    if path.stat().st_size == 0:
        raise AudioInputError(f"{path} is an empty file")
    return str(path)


def decode_audio_checked(value, max_duration_s: float = 60.0,
                         ) -> tuple[np.ndarray, list[str]]:
    """(16 kHz mono float32 samples, flags) of a file path, base64 text or raw bytes in any
    format soundfile reads, at any rate, mono or multichannel.

    Flags: `silent` (RMS below -60 dBFS), `stereo_cancelled` (channels out of phase that
    cancel in their mean: the loudest channel is used instead) and `clipped`. Raises
    `AudioInputError` for a missing or empty file, bytes that are not audio, zero samples,
    non-finite samples, or a clip longer than `max_duration_s` (checked from the header before
    decoding).
    """
    source, name = _source(value)
    try:
        info = sf.info(source)
    except Exception as exc:  # soundfile raises RuntimeError/LibsndfileError/TypeError
        raise AudioInputError(f"{name} is not audio soundfile can read ({exc})") from None
    if isinstance(source, io.BytesIO):
        source.seek(0)
    if info.frames <= 0 or info.samplerate <= 0:
        raise AudioInputError(f"{name} has zero samples")
    _check_duration(info.frames / info.samplerate, max_duration_s, name)
    try:
        frames, sr = sf.read(source, dtype="float32", always_2d=True)
    except Exception as exc:
        raise AudioInputError(f"{name} cannot be decoded ({exc})") from None
    if frames.shape[0] == 0:
        raise AudioInputError(f"{name} has zero samples")
    _check_duration(frames.shape[0] / sr, max_duration_s, name)
    if not np.all(np.isfinite(frames)):
        raise AudioInputError(f"{name} has samples that are not finite numbers")
    mono, cancelled = downmix(frames)
    flags = [STEREO_CANCELLED] if cancelled else []
    if np.mean(np.abs(mono) >= CLIP_LEVEL) > CLIP_SHARE:
        flags.append(CLIPPED)
    audio = resample(np.ascontiguousarray(mono, dtype=np.float32), int(sr), SAMPLE_RATE)
    audio = np.asarray(audio, dtype=np.float32)
    if rms_dbfs(audio) < SILENCE_DBFS:
        flags.append(SILENT)
    return audio, flags


def _check_duration(seconds: float, limit: float, name: str) -> None:
    if seconds > limit:
        raise AudioInputError(f"{name} is {seconds:.1f} s long; the limit is {limit:g} s "
                              "(serve.max_duration_s)")


def decode_audio(value, max_duration_s: float = 60.0) -> np.ndarray:
    """`decode_audio_checked` without the flags."""
    return decode_audio_checked(value, max_duration_s)[0]
