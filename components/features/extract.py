"""Everything measured on one clip, cached by content so a re-run only does new work.

Two passes: `clip_f0_median` gives each clip's F0 median (the stage takes the median per
speaker), then `extract_clip` measures prosody with the F0 search range set around the
speaker's median, eGeMAPS, the transcript and the frame features. Both are plain functions of
a job, so a process pool and Ray Data run the same code. Results are written to the cache
atomically (temp file + rename): a crash loses no finished clip. Cache keys hash the audio, the
inputs of the job and the code that measures it (this module and the project modules it
imports, `code_hash`), so a change to a measurement is never answered from the cache.
"""
from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from components.audio_io import AudioReadError, read_audio
from components.cache_keys import code_hash
from components.features.moonshine import EMBEDDING_DIM, pooled_embedding, shared_decoder

RENAMED = {"jitter_local": "jitter", "shimmer_local": "shimmer", "contour": "intonation"}
_BESIDE: dict[int, ThreadPoolExecutor] = {}
"""Runs a transcriber that may (`Transcriber.concurrent`), and the speech embedding, beside the
acoustic measurements (see `_beside`)."""


@dataclass(frozen=True)
class ClipJob:
    utt_id: str
    audio: str
    """Absolute path of the audio file."""
    reference: str = ""
    """Reference transcript ('' when the corpus has none)."""
    speaker_f0_median_hz: float | None = None
    asr: str = "moonshine"
    asr_on_reference: bool = False
    frames: bool = True
    speech_embedding: str = "none"
    voice_quality: bool = True
    cache_dir: str = ".emoreason/cache/features"


def _file_hash(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_key(job: ClipJob, audio_hash: str) -> str:
    """Hash of the audio content, the code that measures it and every input that changes the
    result."""
    spec = asdict(job)
    for unused in ("utt_id", "audio", "cache_dir"):
        spec.pop(unused)
    if spec["speaker_f0_median_hz"] is not None:
        spec["speaker_f0_median_hz"] = round(spec["speaker_f0_median_hz"], 1)
    if job.reference and not job.asr_on_reference:
        spec.pop("asr")  # the transcriber is not used for this clip
    if job.speech_embedding == "none":
        spec.pop("speech_embedding")  # rows without it are what they were before it existed
    payload = json.dumps({"code": code_hash(__name__), "audio": audio_hash, **spec},
                         sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def _entry(cache_dir: str, key: str, suffix: str) -> Path:
    return Path(cache_dir) / key[:2] / f"{key}{suffix}"


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _save_npy(path: str, array: np.ndarray) -> None:
    with open(path, "wb") as fh:  # a file object: np.save would append .npy to a bare name
        np.save(fh, array)


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (np.floating, np.integer)):
        return _json_safe(value.item())
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _load_json(path: Path) -> dict:
    data = json.loads(path.read_text())
    return {k: (math.nan if v is None and k in NUMERIC_FIELDS else v) for k, v in data.items()}


@functools.cache
def _transcriber(spec: str, pid: int):
    """One transcriber per spec and process (a forked worker must not use its parent's, see
    `shared_decoder`)."""
    from components.features.asr import make_transcriber

    return make_transcriber(spec)


def _beside() -> ThreadPoolExecutor:
    """This process's thread beside the acoustic measurements. Keyed by process id: a forked
    worker does not inherit the parent's thread, so work handed to the parent's pool there
    would never run."""
    pid = os.getpid()
    if pid not in _BESIDE:
        _BESIDE.setdefault(pid, ThreadPoolExecutor(max_workers=1, thread_name_prefix="beside"))
    return _BESIDE[pid]


def _speech_encoder(spec: str):
    """The encoder of `features.speech_embedding` (`moonshine`: the bundled Moonshine base-en,
    the same decoder the `moonshine` transcriber holds)."""
    if spec != "moonshine":
        raise ValueError(f"unknown features.speech_embedding {spec!r}: use 'none' or 'moonshine'")
    return shared_decoder()


def clip_f0_median(job: ClipJob) -> dict:
    """{'utt_id', 'f0_median_hz'} from a clip-level two-pass F0 track (NaN when unvoiced)."""
    from components.features.prosody import f0_track

    try:
        audio_hash = _file_hash(job.audio)
    except OSError:
        return {"utt_id": job.utt_id, "f0_median_hz": math.nan}
    key = hashlib.sha256(f"f0-{code_hash(__name__)}-{audio_hash}".encode()).hexdigest()
    path = _entry(job.cache_dir, key, ".f0.json")
    if path.exists():
        value = json.loads(path.read_text())["f0_median_hz"]
    else:
        try:
            audio, _ = read_audio(job.audio, 16000)
            f0 = f0_track(audio, 16000).f0_hz
            value = float(np.nanmedian(f0)) if np.isfinite(f0).sum() else None
        except AudioReadError:
            value = None
        _atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps({"f0_median_hz": value})))
    return {"utt_id": job.utt_id, "f0_median_hz": math.nan if value is None else value}


NUMERIC_FIELDS = (
    "duration_s", "speech_s", "pause_ratio", "energy_dbfs", "f0_median_hz", "f0_mean_hz",
    "f0_p5_st", "f0_p95_st", "f0_range_st", "f0_sd_st", "voiced_ratio", "rate_sps", "rate_sps_transcript", "jitter",
    "shimmer", "hnr_db", "asr_confidence", "asr_wer",
)


def _measure(job: ClipJob) -> tuple[dict, np.ndarray | None]:
    from components.features.asr import normalise_words, word_error_rate
    from components.features.egemaps import egemaps_functionals
    from components.features.frames import frame_features
    from components.features.prosody import f0_track, measure_prosody

    try:
        audio, sr = read_audio(job.audio, 16000)
    except AudioReadError as exc:
        row = {field: math.nan for field in NUMERIC_FIELDS}
        row.update(intonation="uncertain", egemaps=[math.nan] * 88, transcript=job.reference,
                   transcript_source="reference" if job.reference else "none",
                   flags=[f"audio_unreadable ({exc})"], rate_source="none", n_frames=0)
        if job.speech_embedding != "none":
            row["speech_embedding"] = [math.nan] * EMBEDDING_DIM
        return row, None
    flags: list[str] = []
    transcript, source, confidence, wer = job.reference, "reference", math.nan, math.nan
    heard = None
    if not job.reference or job.asr_on_reference:
        # Speech recognition runs beside the measurements that do not need the transcript
        # (with voice quality measured, a real 4 s clip took 0.30 s instead of 0.33 s in turn).
        transcriber = _transcriber(job.asr, os.getpid())
        if transcriber.concurrent:
            heard = _beside().submit(transcriber.transcribe, audio)
        else:
            heard = Future()
            heard.set_result(transcriber.transcribe(audio))
    embedded = None
    if job.speech_embedding != "none":
        # after the transcriber on the same thread, which leaves the encoder's states to reuse
        embedded = _beside().submit(pooled_embedding, _speech_encoder(job.speech_embedding), audio)
    egemaps = egemaps_functionals(audio, sr)
    track = f0_track(audio, sr, job.speaker_f0_median_hz)
    frames = frame_features(audio, track).astype(np.float16) if job.frames else None
    if heard is not None:
        text, confidence = heard.result()
        if not job.reference:
            transcript, source = text, f"asr:{job.asr}"
            if not text.strip():
                flags.append("transcript:asr_empty")
        elif normalise_words(job.reference):  # a reference of punctuation only has no WER
            wer = word_error_rate(job.reference, text)
    # the rate counts syllable nuclei in the audio; the transcript's count is a cross-check
    prosody = measure_prosody(audio, sr, transcript or None, track=track,
                              voice_quality=job.voice_quality)
    flags = list(prosody.pop("flags")) + flags
    if not np.all(np.isfinite(egemaps)):
        flags.append("egemaps:non_finite")
    row = {RENAMED.get(k, k): v for k, v in prosody.items()}
    row.update(egemaps=[float(v) for v in egemaps], transcript=transcript,
               transcript_source=source, asr_confidence=float(confidence), asr_wer=float(wer),
               flags=flags)
    if embedded is not None:
        row["speech_embedding"] = [float(v) for v in embedded.result()]
    row["n_frames"] = 0 if frames is None else int(frames.shape[0])
    return row, frames


def extract_clip(job: ClipJob) -> dict:
    """The measured row of one clip (from the cache when the same inputs were seen before);
    the frame features, when asked for, are at row['frames_path'] (a .npy in the cache)."""
    try:
        audio_hash = _file_hash(job.audio)
    except OSError:
        audio_hash = "missing"
    key = cache_key(job, audio_hash)
    row_path = _entry(job.cache_dir, key, ".json")
    frames_path = _entry(job.cache_dir, key, ".npy")
    if not row_path.exists() or (job.frames and not frames_path.exists() and audio_hash != "missing"):
        row, frames = _measure(job)
        if frames is not None:
            _atomic_write(frames_path, lambda tmp: _save_npy(tmp, frames))
        safe = {k: _json_safe(v) for k, v in row.items()}
        _atomic_write(row_path, lambda tmp: Path(tmp).write_text(json.dumps(safe)))
    row = _load_json(row_path)
    row["utt_id"] = job.utt_id
    row["frames_path"] = str(frames_path) if job.frames and frames_path.exists() else ""
    row["cache_key"] = key
    return row
