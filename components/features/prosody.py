"""Per-utterance prosody: F0, energy, rate, pauses, voice quality and intonation contour.

Everything is measured on 16 kHz mono audio on one frame grid: frame i is centred at
i * 10 ms and spans 25 ms (`n_frames`, `frame_energy_db`). The F0 track (`f0_track`) lives on
the same grid so the encoder's frame features (`frames.py`) reuse it instead of recomputing it.

Where a value cannot be measured it is NaN and `flags` says why. Flags are either clip-level
(`silent`, `too_short`, `clipped`) or `<field>:<reason>` for one value (e.g.
`f0_median_hz:too_few_voiced`, `jitter_local:praat_undefined`). Silent, short or clipped audio
never raises; audio with non-finite samples is bad input and does.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import parselmouth
from parselmouth.praat import call
from scipy.signal import find_peaks, medfilt

from components.audio_io import resample, to_mono

SR = 16000
HOP = 160
"""10 ms at 16 kHz."""
WIN = 400
"""25 ms at 16 kHz."""
HOP_S = HOP / SR

FIRST_PASS_HZ = (60.0, 700.0)
"""Wide first-pass F0 search range (covers low male to high child/emotional voices)."""
F0_LIMITS_HZ = (50.0, 800.0)
"""The second-pass range is clamped to these limits."""
SECOND_PASS_OCTAVES = (1.25, 1.5)
"""Pass 2 searches from this many octaves below to this many above the speaker's median: room
for the octave-plus rises of excited speech (a band from the clip's own quantiles cut them
off) and for falls an octave down, while keeping out most octave errors of the wide first
pass (on RAVDESS a higher top let in harmonic errors at breathy phrase ends)."""
REPAIR_WINDOW_FRAMES = 25
"""Octave repair compares a frame with the median of voiced frames within +-250 ms."""
REPAIR_TOLERANCE_OCT = 0.3
"""A stretch within this many octaves of a whole number (not 0) of octaves off its local
median is an octave-error candidate."""
REPAIR_JUMP_OCT = 0.5
"""A step of more than half an octave between adjacent voiced frames is a jump (real pitch
moves far less in 10 ms); octave repair decides for each stretch between jumps and gaps."""
REPAIR_SHORT_FRAMES = 5
"""Octave-error candidates of at most this many frames (50 ms) are folded back whatever the
speaker's level: a voice does not leap an octave and back that fast."""
REF_HZ_ST = 100.0
"""Reference of the absolute semitone values f0_p5_st / f0_p95_st: 0 st = 100 Hz."""

SILENCE_DBFS = -80.0
"""A clip whose loudest frame is below this level is `silent`."""
VAD_RANGE_DB = 35.0
"""Energy VAD: a frame is speech when its level is within this many dB of the clip's loud
frames (99th percentile of frame levels, robust to a single click)."""
MIN_PAUSE_S = 0.10
"""Non-speech gaps shorter than this (stop closures, short dips) count as speech."""
MIN_CLIP_S = 0.25
"""Clips shorter than this get the clip-level `too_short` flag."""
MIN_VOICED_FRAMES = 10
"""F0 statistics need at least 100 ms of voicing."""
MIN_RATE_SPEECH_S = 0.25
"""Articulation rate needs at least this much speech."""
CLIP_LEVEL = 0.999
CLIP_SHARE = 0.001
"""`clipped` when more than 0.1 % of the samples are at (or beyond) 99.9 % of full scale."""

NUCLEUS_RANGE_DB = 25.0
NUCLEUS_DIP_DB = 2.0
"""de Jong & Wempe (2009) syllable nuclei: intensity peaks within 25 dB of the loud level (the
99th percentile of the intensity contour), standing at least 2 dB above the dips on both
sides, and voiced (`_syllable_nuclei`)."""

CONTOUR_MIN_VOICED_S = 0.25
"""Fewer voiced seconds than this: contour `too_short`."""
CONTOUR_MIN_RUN_FRAMES = 3
"""Voiced runs shorter than this are dropped from the contour (spurious voicing)."""
CONTOUR_MIN_MEAN_RUN_S = 0.05
CONTOUR_MIN_COVERAGE = 0.25
"""`uncertain` when the kept voiced runs average under 50 ms, or cover under 25 % of the span
from the first to the last voiced frame."""
CONTOUR_FLAT_ST = 2.0
"""Total movement (p95 - p5 of the smoothed contour) under this: `flat`."""
CONTOUR_SHAPE_ST = 2.0
"""A rise, fall or hump must move at least this much on the fitted curve."""
CONTOUR_EXPRESSIVE_RESID_ST = 2.0
CONTOUR_EXPRESSIVE_MOVEMENT_ST = 6.0
"""`expressive` when a quadratic leaves a residual SD above 2 st (several movements), or when
the contour moves 6 st or more with no single rise, fall or hump."""

PROSODY_FIELDS = (
    "duration_s", "speech_s", "pause_ratio", "energy_dbfs", "f0_median_hz", "f0_mean_hz",
    "f0_p5_st", "f0_p95_st", "f0_range_st", "f0_sd_st", "voiced_ratio", "rate_sps",
    "rate_sps_transcript", "jitter_local", "shimmer_local", "hnr_db",
)
"""The numeric outputs of `measure_prosody` (besides `f0_floor_hz`/`f0_ceiling_hz`)."""


@dataclass(frozen=True)
class F0Track:
    """F0 on the 10 ms frame grid and the range it was searched in."""

    f0_hz: np.ndarray
    """[T] float64, NaN where unvoiced."""
    floor_hz: float
    ceiling_hz: float
    n_octave_repaired: int = 0

    @property
    def voiced(self) -> np.ndarray:
        return np.isfinite(self.f0_hz)


def as_16k_mono(audio: np.ndarray, sr: int) -> np.ndarray:
    """float32 mono at 16 kHz; a clear error for non-finite samples."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim not in (1, 2):
        raise ValueError(f"audio must be 1-D or (frames, channels), got shape {audio.shape}")
    audio = to_mono(audio).astype(np.float32)
    if not np.all(np.isfinite(audio)):
        raise ValueError("audio has non-finite samples")
    return resample(audio, int(sr), SR) if len(audio) else audio


def n_frames(n_samples: int) -> int:
    """Frames on the grid of centred 10 ms frames."""
    return 1 + n_samples // HOP


def frame_signal(audio16k: np.ndarray) -> np.ndarray:
    """[T, 400] read-only view of the 25 ms frames centred every 10 ms (zero-padded ends)."""
    padded = np.pad(np.asarray(audio16k, dtype=np.float64), (WIN // 2, WIN // 2))
    return np.lib.stride_tricks.sliding_window_view(padded, WIN)[::HOP][: n_frames(len(audio16k))]


def frame_energy_db(audio16k: np.ndarray) -> np.ndarray:
    """[T] RMS level of each 25 ms frame in dBFS (full scale 1.0; floor -120 dB)."""
    return 10.0 * np.log10(np.maximum((frame_signal(audio16k) ** 2).mean(axis=1), 1e-12))


def _praat_sound(audio16k: np.ndarray) -> parselmouth.Sound:
    return parselmouth.Sound(np.asarray(audio16k, dtype=np.float64), sampling_frequency=SR)


def _praat_pitch_on_grid(snd: parselmouth.Sound, n: int, floor: float, ceiling: float) -> np.ndarray:
    """Praat's autocorrelation pitch, moved onto the frame grid.

    Praat centres its own frames on the sound, so they sit up to half a hop off the grid: a
    grid frame takes the log-linear interpolation of the two Praat frames around it when both
    are voiced, else the nearer one (the voiced one on a tie), else it is unvoiced.
    """
    if snd.duration < 3.0 / floor + HOP_S:  # Praat needs three periods of the floor
        return np.full(n, np.nan)
    pitch = snd.to_pitch_ac(time_step=HOP_S, pitch_floor=floor, pitch_ceiling=ceiling)
    hz = pitch.selected_array["frequency"]
    log_f0 = np.concatenate([[np.nan], np.log(np.where(hz > 0, hz, np.nan)), [np.nan]])
    position = (np.arange(n) * HOP_S - pitch.xs()[0]) / HOP_S
    left = np.floor(position).astype(int)
    weight = position - left  # of the right-hand Praat frame
    a = log_f0[np.clip(left + 1, 0, len(log_f0) - 1)]
    b = log_f0[np.clip(left + 2, 0, len(log_f0) - 1)]
    tie = 1e-6
    out = np.where(
        np.isfinite(a) & np.isfinite(b),
        (1 - weight) * a + weight * b,
        np.where(np.isfinite(a) & (weight <= 0.5 + tie), a, np.where(np.isfinite(b) & (weight >= 0.5 - tie), b, np.nan)),
    )
    return np.exp(out)


def _stretches(f0: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of each run of voiced frames with no jump (REPAIR_JUMP_OCT) inside."""
    out = []
    for a, b in _runs(np.isfinite(f0)):
        jumps = a + 1 + np.flatnonzero(np.abs(np.diff(np.log2(f0[a:b]))) > REPAIR_JUMP_OCT)
        out += list(pairwise([a, *jumps.tolist(), b]))
    return out


def local_medians(f0: np.ndarray, reference_hz: float) -> np.ndarray:
    """Per voiced frame, the median of the voiced frames within +-REPAIR_WINDOW_FRAMES
    (`reference_hz` where fewer than five); NaN at unvoiced frames. All windows at once: a
    frame-by-frame loop was a tenth of a served clip's measurement."""
    from numpy.lib.stride_tricks import sliding_window_view

    local = np.full(len(f0), np.nan)
    voiced = np.flatnonzero(np.isfinite(f0))
    if not len(voiced):
        return local
    padded = np.pad(f0, REPAIR_WINDOW_FRAMES, constant_values=np.nan)
    windows = sliding_window_view(padded, 2 * REPAIR_WINDOW_FRAMES + 1)[voiced]
    enough = np.isfinite(windows).sum(1) >= 5
    medians = np.full(len(voiced), float(reference_hz))
    if enough.any():
        medians[enough] = np.nanmedian(windows[enough], axis=1)
    local[voiced] = medians
    return local


def repair_octaves(f0: np.ndarray, reference_hz: float) -> tuple[np.ndarray, int]:
    """Fold octave errors back: (track, frames folded).

    A stretch (`_stretches`) whose median sits k octaves (a whole number, not 0, within
    REPAIR_TOLERANCE_OCT) off the median of its frames' local medians (voiced frames within
    +-250 ms; the reference where fewer than five) is folded back by k octaves when that is
    clearly an error: it is short (REPAIR_SHORT_FRAMES); or it is two octaves or more off,
    which no voice moves; or it meets a neighbour across a jump and, folded, is nearer
    `reference_hz` (the speaker's median). So a longer stretch an octave above its context
    after an unvoiced gap is kept (a syllable may start that high after a consonant), and so
    is a stretch at the speaker's own level next to a long high one.
    """
    voiced = np.isfinite(f0)
    local = local_medians(f0, reference_hz)
    out, fixed = f0.copy(), 0
    for a, b in _stretches(f0):
        level = float(np.median(f0[a:b]))
        off = math.log2(level / float(np.median(local[a:b])))
        octaves = round(off)
        if octaves == 0 or abs(off - octaves) >= REPAIR_TOLERANCE_OCT:
            continue
        jump = (a > 0 and voiced[a - 1]) or (b < len(f0) and voiced[b])
        from_reference = math.log2(level / reference_hz)
        if (b - a <= REPAIR_SHORT_FRAMES or abs(octaves) >= 2
                or (jump and abs(from_reference - octaves) < abs(from_reference))):
            out[a:b] = f0[a:b] * 2.0**-octaves
            fixed += b - a
    return out, fixed


def f0_track(audio: np.ndarray, sr: int = SR, speaker_f0_median_hz: float | None = None) -> F0Track:
    """Two-pass Praat F0 (a wide pass, then a speaker-relative one) with octave-error repair.

    Pass 1 searches 60-700 Hz. The reference is the speaker's median when given, else the
    clip's pass-1 median; pass 2 searches SECOND_PASS_OCTAVES below and above it (clamped to
    50-800 Hz), so an excited rise an octave and more above the speaker's level is kept.
    Octave jumps left in pass 2 are folded back (`repair_octaves`). A speaker median that is
    NaN or not positive (a speaker with no voiced clip) counts as not given.
    """
    audio16k = as_16k_mono(audio, sr)
    n = n_frames(len(audio16k))
    floor, ceiling = FIRST_PASS_HZ
    if len(audio16k) == 0 or not np.any(audio16k):
        return F0Track(np.full(n, np.nan), floor, ceiling)
    snd = _praat_sound(audio16k)
    first = _praat_pitch_on_grid(snd, n, floor, ceiling)
    voiced = first[np.isfinite(first)]
    if len(voiced) < MIN_VOICED_FRAMES:
        return F0Track(first, floor, ceiling)
    usable = speaker_f0_median_hz is not None and math.isfinite(speaker_f0_median_hz) and speaker_f0_median_hz > 0
    reference = float(speaker_f0_median_hz) if usable else float(np.median(voiced))
    below, above = SECOND_PASS_OCTAVES
    floor = float(max(F0_LIMITS_HZ[0], reference * 2.0**-below))
    ceiling = float(min(F0_LIMITS_HZ[1], reference * 2.0**above))
    second = _praat_pitch_on_grid(snd, n, floor, ceiling)
    repaired, fixed = repair_octaves(second, reference)
    return F0Track(repaired, floor, ceiling, fixed)


def count_syllables(text: str) -> int:
    """English syllables by vowel groups, with silent final e and -ed/-es endings.

    A heuristic (about right for everyday words); digits and symbols are ignored.
    """
    total = 0
    for word in re.findall(r"[a-z]+(?:'[a-z]+)?", text.lower()):
        word = word.replace("'", "")
        count = len(re.findall(r"[aeiouy]+", word))
        if count > 1 and word.endswith("e") and not word.endswith(("ee", "ye")) and not re.search(r"[^aeiouy]le$", word):
            count -= 1
        elif count > 1 and word.endswith("ed") and not word.endswith(("ted", "ded")):
            count -= 1
        elif count > 1 and word.endswith("es") and not re.search(r"(s|x|z|ch|sh|ge|ce)es$", word):
            count -= 1
        total += max(count, 1)
    return total


def _fill_short_gaps(mask: np.ndarray, max_gap: int) -> np.ndarray:
    """Treat non-speech gaps of at most `max_gap` frames between speech frames as speech."""
    out = mask.copy()
    idx = np.flatnonzero(mask)
    for a, b in zip(idx[:-1], idx[1:]):
        if 1 < b - a <= max_gap + 1:
            out[a:b] = True
    return out


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of each run of True."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)))


def contour_class(f0_hz: np.ndarray) -> str:
    """Intonation class of a frame-grid F0 track (NaN = unvoiced).

    The voiced runs are median-smoothed (5 frames) and put in semitones re their median; a
    quadratic in normalised time over the voiced span gives the start, end and any interior
    extremum (between 15 % and 85 % of the span). Thresholds are the CONTOUR_* constants.
    """
    runs = [(a, b) for a, b in _runs(np.isfinite(f0_hz)) if b - a >= CONTOUR_MIN_RUN_FRAMES]
    n_voiced = sum(b - a for a, b in runs)
    if n_voiced * HOP_S < CONTOUR_MIN_VOICED_S:
        return "too_short"
    span = runs[-1][1] - runs[0][0]
    if n_voiced / len(runs) * HOP_S < CONTOUR_MIN_MEAN_RUN_S or n_voiced / span < CONTOUR_MIN_COVERAGE:
        return "uncertain"
    t = np.concatenate([np.arange(a, b) for a, b in runs]).astype(np.float64)
    hz = np.concatenate([medfilt(f0_hz[a:b], 5) if b - a >= 5 else f0_hz[a:b] for a, b in runs])
    st = 12.0 * np.log2(hz / np.median(hz))
    p5, p95 = np.percentile(st, [5, 95])
    movement = p95 - p5
    if movement < CONTOUR_FLAT_ST:
        return "flat"
    x = (t - t[0]) / max(t[-1] - t[0], 1.0)
    coef = np.polyfit(x, st, 2)
    fit = np.poly1d(coef)
    if np.std(st - fit(x)) > CONTOUR_EXPRESSIVE_RESID_ST:
        return "expressive"
    start, end = fit(0.0), fit(1.0)
    if coef[0] != 0.0 and 0.15 < -coef[1] / (2 * coef[0]) < 0.85:
        middle = fit(-coef[1] / (2 * coef[0]))
        if middle - start >= CONTOUR_SHAPE_ST and middle - end >= CONTOUR_SHAPE_ST:
            return "rise-fall"
        if start - middle >= CONTOUR_SHAPE_ST and end - middle >= CONTOUR_SHAPE_ST:
            return "fall-rise"
    if end - start >= CONTOUR_SHAPE_ST:
        return "rising"
    if start - end >= CONTOUR_SHAPE_ST:
        return "falling"
    return "expressive" if movement >= CONTOUR_EXPRESSIVE_MOVEMENT_ST else "flat"


def _syllable_nuclei(snd: parselmouth.Sound, track: F0Track) -> int:
    """Syllable nuclei after de Jong & Wempe (2009): peaks of Praat's intensity contour (50 Hz
    minimum pitch) within 25 dB of the loud level that stand at least 2 dB above the dips on
    both sides, and where the F0 track is voiced.

    The published script asks for the 2 dB dip only after each peak, so a shoulder on the
    falling side of a louder syllable counts as one more syllable (on every fourth RAVDESS dev
    clip, all sentences of 7 syllables, the mean absolute error is 1.3 that way, 0.6 this). The
    clip's edges count as silence (at most the 25 dB threshold), so a syllable cut by an edge
    is still one.
    """
    intensity = snd.to_intensity(minimum_pitch=50.0, time_step=HOP_S)
    values = intensity.values[0]
    threshold = float(np.percentile(values, 99)) - NUCLEUS_RANGE_DB
    silence = min(threshold, float(values.min()))
    peaks, _ = find_peaks(np.concatenate([[silence], values, [silence]]), height=threshold,
                          prominence=NUCLEUS_DIP_DB)
    times = np.asarray(intensity.xs())[peaks - 1]
    frames = np.clip(np.rint(times / HOP_S).astype(int), 0, len(track.f0_hz) - 1)
    return int(track.voiced[frames].sum())


def _voice_quality(snd: parselmouth.Sound, track: F0Track) -> dict[str, float]:
    """Local jitter and shimmer (Praat defaults) and mean HNR (cc) over the voiced parts."""
    points = call(snd, "To PointProcess (periodic, cc)", track.floor_hz, track.ceiling_hz)
    harmonicity = call(snd, "To Harmonicity (cc)", HOP_S, track.floor_hz, 0.1, 1.0)
    return {
        "jitter_local": float(call(points, "Get jitter (local)", 0, 0, 0.0001, 0.02, 1.3)),
        "shimmer_local": float(call([snd, points], "Get shimmer (local)", 0, 0, 0.0001, 0.02, 1.3, 1.6)),
        "hnr_db": float(call(harmonicity, "Get mean", 0, 0)),
    }


def _f0_stats(f0: np.ndarray) -> dict[str, float]:
    st100 = 12.0 * np.log2(f0 / REF_HZ_ST)
    median = float(np.median(f0))
    p5, p95 = np.percentile(st100, [5, 95])
    return {
        "f0_median_hz": median,
        "f0_mean_hz": float(np.mean(f0)),
        "f0_p5_st": float(p5),
        "f0_p95_st": float(p95),
        "f0_range_st": float(p95 - p5),
        "f0_sd_st": float(np.std(12.0 * np.log2(f0 / median))),
    }


def measure_prosody(
    audio: np.ndarray,
    sr: int,
    transcript: str | None,
    speaker_f0_median_hz: float | None = None,
    track: F0Track | None = None,
    voice_quality: bool = True,
) -> dict:
    """Prosody of one utterance as a flat dict: PROSODY_FIELDS (floats, NaN + flag where not
    measured), f0_floor_hz/f0_ceiling_hz (the second-pass F0 range), f0_octave_fixes (frames
    folded back by `repair_octaves`), syllables (int, -1 when no rate was measured),
    rate_source, contour (see `contour_class`) and flags (list of str).

    - F0 statistics over voiced frames: median/mean in Hz, p5/p95 in semitones re 100 Hz,
      range = p95 - p5, SD in semitones re the clip median.
    - energy_dbfs: RMS (power mean) over VAD speech frames; a full-scale sine reads -3 dBFS.
    - speech_s: VAD speech with gaps under 100 ms filled; pause_ratio: share of non-speech time
      between the first and the last speech frame (gaps under 100 ms do not count).
    - voiced_ratio: voiced share of the speech frames.
    - rate_sps: syllables per second of speech, the syllables counted as voiced intensity
      peaks in the audio (`_syllable_nuclei`, rate_source "intensity_peaks"), so any language
      and a wrong transcript give the same rate; rate_sps_transcript: the same with the
      transcript's English syllable count (`count_syllables`), a cross-check (NaN without
      a transcript).
    - jitter_local / shimmer_local as fractions, hnr_db in dB; with `voice_quality` False they
      are not measured (NaN, flagged `not_measured`): Praat's harmonicity is most of the
      time of this function, and nothing served reads them.
    Pass `track` (from `f0_track` on the same audio) to avoid computing F0 twice.
    """
    audio16k = as_16k_mono(audio, sr)
    n = n_frames(len(audio16k))
    flags: list[str] = []
    out: dict = {field: math.nan for field in PROSODY_FIELDS}
    out["duration_s"] = len(audio16k) / SR
    if out["duration_s"] < MIN_CLIP_S:
        flags.append("too_short")
    if len(audio16k) and np.mean(np.abs(audio16k) >= CLIP_LEVEL) > CLIP_SHARE:
        flags.append("clipped")

    level = frame_energy_db(audio16k)
    silent = len(audio16k) == 0 or float(level.max()) < SILENCE_DBFS
    if track is None:
        track = f0_track(audio16k, SR, speaker_f0_median_hz)
    elif len(track.f0_hz) != n:
        raise ValueError(f"F0 track has {len(track.f0_hz)} frames, the audio {n}")
    out["f0_floor_hz"], out["f0_ceiling_hz"] = track.floor_hz, track.ceiling_hz
    out["f0_octave_fixes"] = track.n_octave_repaired
    out["syllables"], out["rate_source"], out["contour"] = -1, "none", contour_class(track.f0_hz)

    if silent:
        flags.append("silent")
        out["speech_s"] = 0.0
        out["flags"] = _explain_nans(out, flags, "silent")
        return out

    speech = level > np.percentile(level, 99) - VAD_RANGE_DB
    filled = _fill_short_gaps(speech, int(round(MIN_PAUSE_S / HOP_S)) - 1)
    out["speech_s"] = float(filled.sum() * HOP_S)
    out["energy_dbfs"] = float(10.0 * np.log10(np.mean(10.0 ** (level[speech] / 10.0))))
    first, last = np.flatnonzero(speech)[[0, -1]]
    out["pause_ratio"] = float(1.0 - filled[first : last + 1].mean())

    voiced = track.voiced
    out["voiced_ratio"] = float((voiced & filled).sum() / filled.sum())
    if voiced.sum() >= MIN_VOICED_FRAMES:
        out.update(_f0_stats(track.f0_hz[voiced]))
    else:
        reason = "no_voicing" if not voiced.any() else "too_few_voiced"
        flags += [f"{f}:{reason}" for f in ("f0_median_hz", "f0_mean_hz", "f0_p5_st", "f0_p95_st", "f0_range_st", "f0_sd_st")]

    snd = _praat_sound(audio16k)
    text_syllables = count_syllables(transcript) if transcript else 0
    if out["speech_s"] < MIN_RATE_SPEECH_S:
        flags += ["rate_sps:too_short", "rate_sps_transcript:too_short"]
    else:
        out["syllables"], out["rate_source"] = _syllable_nuclei(snd, track), "intensity_peaks"
        out["rate_sps"] = out["syllables"] / out["speech_s"]
        if text_syllables:
            out["rate_sps_transcript"] = text_syllables / out["speech_s"]
        else:
            flags.append("rate_sps_transcript:no_transcript")

    if not voice_quality:
        flags += [f"{f}:not_measured" for f in ("jitter_local", "shimmer_local", "hnr_db")]
    elif voiced.sum() >= MIN_VOICED_FRAMES:
        try:
            out.update(_voice_quality(snd, track))
        except parselmouth.PraatError as exc:
            flags += [f"{f}:praat_error ({str(exc).strip().splitlines()[0]})" for f in ("jitter_local", "shimmer_local", "hnr_db")]
    else:
        flags += [f"{f}:too_few_voiced" for f in ("jitter_local", "shimmer_local", "hnr_db")]
    out["flags"] = _explain_nans(out, flags, "praat_undefined")
    return out


def _explain_nans(out: dict, flags: list[str], reason: str) -> list[str]:
    """Every NaN field gets a flag naming it (`<field>:<reason>` when none does yet)."""
    named = {flag.split(":", 1)[0] for flag in flags}
    for field in PROSODY_FIELDS:
        if math.isnan(out[field]) and field not in named:
            flags.append(f"{field}:{reason}")
    return flags
