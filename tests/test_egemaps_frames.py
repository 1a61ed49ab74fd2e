"""eGeMAPS functionals and the encoder's frame features, checked on signals of known content."""
import math

import numpy as np
import pandas as pd
import pytest
from safetensors.numpy import save_file

from components.features.egemaps import EGEMAPS_NAMES, egemaps_functionals
from components.features.frames import (
    ENERGY_DB,
    FRAME_FEATURE_NAMES,
    LOG_F0,
    N_MELS,
    VOICING,
    frame_features,
    iter_shard,
    load_frames,
    write_shard,
)
from components.features.prosody import SR, f0_track, frame_energy_db, n_frames
from tests.test_prosody import pad, steady


def test_egemaps_has_88_named_values_and_sees_pitch_and_loudness():
    assert len(EGEMAPS_NAMES) == 88 == len(set(EGEMAPS_NAMES))
    quiet = egemaps_functionals(steady(220.0) * 0.1, SR)
    loud = egemaps_functionals(steady(220.0) * 0.5, SR)
    assert quiet.shape == (88,) and quiet.dtype == np.float32 and np.all(np.isfinite(quiet))
    f0_st = quiet[EGEMAPS_NAMES.index("F0semitoneFrom27.5Hz_sma3nz_amean")]
    assert f0_st == pytest.approx(12 * math.log2(220.0 / 27.5), abs=0.5)
    loudness = EGEMAPS_NAMES.index("loudness_sma3_amean")
    assert loud[loudness] > quiet[loudness] * 2


def test_egemaps_same_voice_at_48k_agrees():
    at16 = egemaps_functionals(steady(180.0), SR)
    at48 = egemaps_functionals(steady(180.0, sr=48000), 48000)
    f0 = EGEMAPS_NAMES.index("F0semitoneFrom27.5Hz_sma3nz_amean")
    assert at48[f0] == pytest.approx(at16[f0], abs=0.3)


def test_egemaps_too_short_is_nan_for_the_caller_to_flag():
    values = egemaps_functionals(np.zeros(160, np.float32), SR)
    assert values.shape == (88,) and np.all(np.isnan(values))
    assert np.all(np.isnan(egemaps_functionals(np.zeros(0, np.float32), SR)))
    with pytest.raises(ValueError, match="mono"):
        egemaps_functionals(np.zeros((SR, 2), np.float32), SR)


def test_frame_feature_layout_and_f0_columns():
    audio = pad(steady(150.0), 0.5)
    features = frame_features(audio)
    assert FRAME_FEATURE_NAMES[LOG_F0] == "log_f0" and FRAME_FEATURE_NAMES[VOICING] == "voicing"
    assert features.shape == (n_frames(len(audio)), len(FRAME_FEATURE_NAMES)) == (n_frames(len(audio)), 83)
    assert features.dtype == np.float32
    voiced = features[:, VOICING] == 1
    assert set(np.unique(features[:, VOICING])) == {0.0, 1.0}
    assert not voiced[:40].any() and not voiced[-40:].any() and voiced[60:190].all()
    np.testing.assert_allclose(np.exp(features[voiced, LOG_F0]), 150.0, rtol=0.02)
    np.testing.assert_allclose(features[:, LOG_F0], math.log(150.0), rtol=0.01)  # held through silence
    np.testing.assert_allclose(features[:, ENERGY_DB], frame_energy_db(audio), rtol=1e-5)


def test_log_f0_is_interpolated_through_unvoiced_gaps_and_zero_without_voice():
    gap = np.zeros(int(0.3 * SR), np.float32)
    audio = np.concatenate([steady(150.0, 0.5), gap, steady(200.0, 0.5)])
    features = frame_features(audio)
    middle = features[65, LOG_F0]  # 0.65 s: in the gap
    assert features[65, VOICING] == 0 and math.log(150) < middle < math.log(200)
    silent = frame_features(np.zeros(SR, np.float32))
    assert np.all(silent[:, LOG_F0] == 0) and np.all(silent[:, VOICING] == 0)
    np.testing.assert_allclose(silent[:, :N_MELS], math.log(1e-10), rtol=1e-6)


def test_log_mel_peaks_at_the_band_of_a_sine():
    t = np.arange(SR) / SR
    low = frame_features(np.sin(2 * np.pi * 300 * t).astype(np.float32) * 0.5)
    high = frame_features(np.sin(2 * np.pi * 3000 * t).astype(np.float32) * 0.5)
    low_band = int(np.argmax(low[50, :N_MELS]))
    high_band = int(np.argmax(high[50, :N_MELS]))
    assert 5 < low_band < high_band < N_MELS - 10


def test_a_given_track_is_reused_and_must_fit():
    audio = steady(150.0)
    track = f0_track(audio, SR)
    np.testing.assert_array_equal(frame_features(audio, track), frame_features(audio))
    with pytest.raises(ValueError, match="frames"):
        frame_features(audio[: SR // 2], track)


def test_shards_round_trip_in_order(tmp_path):
    rng = np.random.default_rng(0)
    items = [
        (f"corpus/utt {i}", rng.normal(size=(10 + i, 83)).astype(np.float16 if i % 2 else np.float32))
        for i in range(5)
    ]
    path = tmp_path / "shards" / "00000.safetensors"
    write_shard(path, items)
    loaded = dict(iter_shard(path))
    assert list(loaded) == [utt_id for utt_id, _ in items]
    for utt_id, array in items:
        assert loaded[utt_id].dtype == array.dtype
        np.testing.assert_array_equal(loaded[utt_id], array)
    first_id, first = next(iter_shard(path))
    assert first_id == "corpus/utt 0" and first.shape == (10, 83)


def test_bad_shards_are_errors(tmp_path):
    frames = np.zeros((3, 83), np.float32)
    with pytest.raises(ValueError, match="duplicate"):
        write_shard(tmp_path / "a.safetensors", [("x", frames), ("x", frames)])
    with pytest.raises(ValueError, match=r"expected \[T, 83\]"):
        write_shard(tmp_path / "b.safetensors", [("x", np.zeros((3, 80), np.float32))])
    save_file({"x": frames}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not a frame-feature shard"):
        dict(iter_shard(tmp_path / "other.safetensors"))


def test_load_frames_reads_the_wanted_clips_across_shards(tmp_path):
    arrays = {f"u{i}": np.full((3 + i, 83), i, np.float16) for i in range(4)}
    write_shard(tmp_path / "00000.safetensors", [(u, arrays[u]) for u in ("u0", "u1")])
    write_shard(tmp_path / "00001.safetensors", [(u, arrays[u]) for u in ("u2", "u3")])
    with pytest.raises(FileNotFoundError, match="frame index not found"):
        load_frames(tmp_path)
    pd.DataFrame({"utt_id": list(arrays), "shard": ["00000.safetensors"] * 2 + ["00001.safetensors"] * 2}
                 ).to_parquet(tmp_path / "index.parquet")
    wanted = load_frames(tmp_path, {"u1", "u3"})
    assert sorted(wanted) == ["u1", "u3"]
    np.testing.assert_array_equal(wanted["u3"], arrays["u3"])
    assert sorted(load_frames(tmp_path)) == sorted(arrays)
    with pytest.raises(ValueError, match="no frame features for 1 clips"):
        load_frames(tmp_path, {"u1", "u9"})
