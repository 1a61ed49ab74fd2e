"""Prosody measurements checked against synthetic voices of known F0 and level, and real speech."""
import math
from collections import defaultdict

import numpy as np
import pytest
import soundfile as sf

from components.audio_io import read_audio
from components.features.prosody import (
    PROSODY_FIELDS,
    SR,
    contour_class,
    count_syllables,
    f0_track,
    measure_prosody,
    n_frames,
    repair_octaves,
)
from tests.conftest import require_shared

FORMANTS = ((700.0, 130.0, 1.0), (1220.0, 170.0, 0.5), (2600.0, 250.0, 0.25))


def vowel(f0_hz, sr: int = SR, peak: float = 0.3) -> np.ndarray:
    """An /a/-like voice: harmonics of a per-sample F0 contour shaped by three formants."""
    f0_hz = np.asarray(f0_hz, dtype=np.float64)
    phase = 2 * np.pi * np.cumsum(f0_hz) / sr
    out = np.zeros(len(f0_hz))
    for k in range(1, int(0.45 * sr / f0_hz.min()) + 1):
        fk = k * f0_hz
        envelope = sum(a / (1 + ((fk - fc) / bw) ** 2) for fc, bw, a in FORMANTS)
        out += envelope * (fk < 0.45 * sr) * np.sin(k * phase) / math.sqrt(k)
    return (peak * out / np.max(np.abs(out))).astype(np.float32)


def steady(f0: float, seconds: float = 1.5, sr: int = SR) -> np.ndarray:
    return vowel(np.full(int(seconds * sr), f0), sr)


def pad(audio: np.ndarray, seconds: float = 1.0) -> np.ndarray:
    silence = np.zeros(int(seconds * SR), dtype=np.float32)
    return np.concatenate([silence, audio, silence])


def assert_nans_flagged(result: dict) -> None:
    named = {flag.split(":", 1)[0] for flag in result["flags"]}
    for field in PROSODY_FIELDS:
        if math.isnan(result[field]):
            assert field in named or "silent" in result["flags"], (field, result["flags"])


@pytest.mark.parametrize("f0", [120.0, 220.0])
def test_f0_median_of_a_synthetic_vowel_is_recovered(f0):
    result = measure_prosody(steady(f0), SR, None)
    assert result["f0_median_hz"] == pytest.approx(f0, rel=0.02)
    assert result["f0_p5_st"] == pytest.approx(12 * math.log2(f0 / 100), abs=0.3)
    assert result["f0_range_st"] < 0.5
    assert result["voiced_ratio"] > 0.9
    assert result["contour"] == "flat"
    assert result["jitter_local"] < 0.005 and result["hnr_db"] > 20
    assert result["flags"] == []


def test_silence_padding_changes_neither_f0_nor_energy():
    audio = vowel(np.geomspace(150, 200, int(1.5 * SR)))
    bare, padded = measure_prosody(audio, SR, "hello"), measure_prosody(pad(audio), SR, "hello")
    for field in ("f0_median_hz", "f0_mean_hz"):
        assert padded[field] == pytest.approx(bare[field], rel=0.01)
    for field in ("f0_p5_st", "f0_p95_st", "f0_range_st", "f0_sd_st"):
        assert padded[field] == pytest.approx(bare[field], abs=0.2)
    assert padded["energy_dbfs"] == pytest.approx(bare["energy_dbfs"], abs=0.5)
    assert padded["speech_s"] == pytest.approx(bare["speech_s"], abs=0.05)
    assert padded["pause_ratio"] == bare["pause_ratio"] == 0.0
    assert padded["rate_sps"] == pytest.approx(bare["rate_sps"], rel=0.05)
    assert padded["duration_s"] == pytest.approx(3.5)


def test_stereo_mono_and_48k_files_agree(tmp_path):
    mono = tmp_path / "mono.wav"
    stereo = tmp_path / "stereo.wav"
    stereo48 = tmp_path / "stereo48.wav"
    audio = steady(180.0)
    sf.write(mono, audio, SR, subtype="PCM_16")
    sf.write(stereo, np.stack([audio, audio], axis=1), SR, subtype="PCM_16")
    audio48 = steady(180.0, sr=48000)
    sf.write(stereo48, np.stack([audio48, audio48], axis=1), 48000, subtype="PCM_16")
    results = [measure_prosody(*read_audio(p), None) for p in (mono, stereo, stereo48)]
    for other in results[1:]:
        assert other["f0_median_hz"] == pytest.approx(results[0]["f0_median_hz"], rel=0.01)
        assert other["energy_dbfs"] == pytest.approx(results[0]["energy_dbfs"], abs=0.3)
        assert other["speech_s"] == pytest.approx(results[0]["speech_s"], abs=0.03)


def test_a_copy_10_db_louder_reads_10_db_higher():
    audio = steady(150.0) * 0.1
    quiet = measure_prosody(audio, SR, None)
    loud = measure_prosody(audio * 10 ** (10 / 20), SR, None)
    assert loud["energy_dbfs"] - quiet["energy_dbfs"] == pytest.approx(10.0, abs=0.1)
    assert loud["f0_median_hz"] == pytest.approx(quiet["f0_median_hz"], rel=0.01)


def test_full_scale_sine_reads_minus_3_dbfs():
    t = np.arange(SR) / SR
    result = measure_prosody(np.sin(2 * np.pi * 200 * t).astype(np.float32) * 0.999, SR, None)
    assert result["energy_dbfs"] == pytest.approx(-3.01, abs=0.1)  # edge frames are half empty


@pytest.mark.parametrize(
    ("contour", "expected"),
    [
        (np.geomspace(120, 240, int(1.5 * SR)), "rising"),
        (np.geomspace(240, 120, int(1.5 * SR)), "falling"),
        (np.linspace(120, 240, int(1.5 * SR)), "rising"),
        (np.concatenate([np.geomspace(130, 260, int(0.8 * SR)), np.geomspace(260, 130, int(0.8 * SR))]), "rise-fall"),
        (np.concatenate([np.geomspace(260, 130, int(0.8 * SR)), np.geomspace(130, 260, int(0.8 * SR))]), "fall-rise"),
        (np.full(int(1.5 * SR), 160.0), "flat"),
        (160 * 2 ** (np.sin(2 * np.pi * 1.5 * np.arange(int(2.0 * SR)) / SR) * 6 / 12), "expressive"),
    ],
    ids=["rising", "falling", "rising-linear-hz", "rise-fall", "fall-rise", "flat", "expressive"],
)
def test_intonation_contour_class(contour, expected):
    assert measure_prosody(vowel(contour), SR, None)["contour"] == expected


def test_contour_too_short_and_uncertain():
    n = n_frames(SR)
    assert contour_class(np.full(n, np.nan)) == "too_short"
    short = np.full(n, np.nan)
    short[10:30] = 150.0  # 0.2 s voiced
    assert contour_class(short) == "too_short"
    choppy = np.full(n, np.nan)
    for start in range(0, 90, 9):  # ten 40 ms runs spread over 0.9 s
        choppy[start : start + 4] = 150.0
    assert contour_class(choppy) == "uncertain"


@pytest.mark.parametrize("audio", [np.zeros(SR, np.float32), np.zeros(0, np.float32)], ids=["1s", "empty"])
def test_silence_gives_flags_and_nans_without_raising(audio):
    result = measure_prosody(audio, SR, "some words")
    assert "silent" in result["flags"]
    assert result["speech_s"] == 0.0
    assert all(math.isnan(result[f]) for f in PROSODY_FIELDS if f not in ("duration_s", "speech_s"))
    assert result["contour"] == "too_short"
    assert_nans_flagged(result)


def test_a_tenth_of_a_second_is_too_short_but_measured_where_possible():
    result = measure_prosody(steady(150.0, seconds=0.1), SR, "word")
    assert "too_short" in result["flags"]
    assert math.isfinite(result["energy_dbfs"])
    assert math.isnan(result["rate_sps"]) and "rate_sps:too_short" in result["flags"]
    assert math.isnan(result["f0_median_hz"])
    assert result["contour"] == "too_short"
    assert_nans_flagged(result)


def test_clipping_is_flagged():
    clean = steady(150.0)
    clipped = np.clip(clean * 8, -1.0, 1.0)
    assert "clipped" not in measure_prosody(clean, SR, None)["flags"]
    result = measure_prosody(clipped, SR, None)
    assert "clipped" in result["flags"]
    assert result["f0_median_hz"] == pytest.approx(150.0, rel=0.02)


def test_unvoiced_noise_has_no_f0_and_says_so():
    noise = np.random.default_rng(0).normal(0, 0.05, SR).astype(np.float32)
    result = measure_prosody(noise, SR, None)
    assert math.isfinite(result["energy_dbfs"])
    assert math.isnan(result["f0_median_hz"]) and math.isnan(result["jitter_local"])
    assert result["voiced_ratio"] < 0.1
    assert_nans_flagged(result)


def test_non_finite_samples_are_rejected():
    audio = steady(150.0)
    audio[100] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        measure_prosody(audio, SR, None)


def test_pauses_and_rate_from_the_transcript():
    word = steady(150.0, seconds=0.5)
    gap = np.zeros(int(0.5 * SR), np.float32)
    blip = np.zeros(int(0.05 * SR), np.float32)  # a 50 ms gap is not a pause
    audio = np.concatenate([word, gap, word[: SR // 4], blip, word[: SR // 4]])
    result = measure_prosody(audio, SR, "kids are talking by the door")
    assert result["pause_ratio"] == pytest.approx(0.5 / 1.55, abs=0.03)
    assert result["speech_s"] == pytest.approx(1.05, abs=0.06)  # 25 ms frames overhang each edge
    assert result["rate_source"] == "transcript" and result["syllables"] == 7
    assert result["rate_sps"] == pytest.approx(7 / result["speech_s"])
    for transcript in (None, "", " ... "):
        untranscribed = measure_prosody(audio, SR, transcript)
        assert untranscribed["rate_source"] == "intensity_peaks"
        assert untranscribed["syllables"] == 2  # two voiced bursts with a deep dip between


def test_count_syllables():
    assert count_syllables("Kids are talking by the door") == 7
    assert count_syllables("Dogs are sitting by the door.") == 7
    assert count_syllables("table people wanted talked makes boxes") == 2 + 2 + 2 + 1 + 1 + 2
    assert count_syllables("I don't know, 42!") == 3
    assert count_syllables("") == 0


def test_octave_jumps_are_folded_back():
    f0 = np.full(60, 150.0)
    f0[20:24] = 300.0
    f0[40:42] = 75.0
    f0[50] = np.nan
    repaired, fixed = repair_octaves(f0, reference_hz=150.0)
    assert fixed == 6
    np.testing.assert_allclose(repaired[np.isfinite(repaired)], 150.0)
    assert np.isnan(repaired[50])


def test_a_given_track_is_reused_and_must_fit_the_audio():
    audio = steady(200.0)
    track = f0_track(audio, SR, speaker_f0_median_hz=200.0)
    assert len(track.f0_hz) == n_frames(len(audio))
    assert track.floor_hz < 200 < track.ceiling_hz
    assert measure_prosody(audio, SR, None, track=track) == measure_prosody(audio, SR, None, speaker_f0_median_hz=200.0)
    with pytest.raises(ValueError, match="frames"):
        measure_prosody(audio[: SR // 2], SR, None, track=track)


@pytest.mark.realdata
def test_angry_is_louder_and_higher_than_sad_on_real_speech():
    """One strong sad and one strong angry clip of eight RAVDESS actors: angry is louder for
    every actor and higher on average (a sad clip may be a high, crying voice, so F0 is not
    required to rise for every single actor)."""
    root = require_shared("ravdess-dev")
    results = defaultdict(dict)
    for actor in range(1, 9):
        for emotion in ("04", "05"):
            path = root / f"Actor_{actor:02d}" / f"03-01-{emotion}-02-01-01-{actor:02d}.wav"
            result = measure_prosody(*read_audio(path), "Kids are talking by the door")
            for field in ("f0_median_hz", "f0_mean_hz", "energy_dbfs", "rate_sps", "jitter_local", "hnr_db"):
                assert math.isfinite(result[field]), (path.name, field, result["flags"])
            assert result["contour"] not in ("too_short",), path.name
            results[actor][emotion] = result
    louder = [r["05"]["energy_dbfs"] - r["04"]["energy_dbfs"] for r in results.values()]
    higher = [12 * math.log2(r["05"]["f0_mean_hz"] / r["04"]["f0_mean_hz"]) for r in results.values()]
    assert min(louder) > 3.0, louder
    assert np.mean(higher) > 2.0 and sum(h > 0 for h in higher) >= 6, higher
