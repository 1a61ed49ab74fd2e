"""The prosody token's vector: speaker-normalised eGeMAPS in training, the same normalisation
over one speaker's clips at prediction time, the training population's otherwise."""
import json

import numpy as np
import pandas as pd
import pytest

from components.features.egemaps import egemaps_functionals
from components.speechlm.prosody_vector import (
    NORM_FILE,
    PROSODY_DIM,
    clip_vectors,
    load_stats,
    population_stats,
    population_vectors,
    save_stats,
    training_vectors,
)


def tone(f0: float, seconds: float = 1.0, gain: float = 0.3) -> np.ndarray:
    t = np.arange(int(16000 * seconds)) / 16000
    return (gain * np.sin(2 * np.pi * f0 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


@pytest.fixture(scope="module")
def clips():
    return [tone(f0, gain=g) for f0, g in ((120, 0.2), (160, 0.3), (200, 0.4), (240, 0.5))]


def test_one_speakers_clips_are_normalised_over_themselves(clips):
    stats = {"mean": [0.0] * PROSODY_DIM, "std": [1.0] * PROSODY_DIM}
    raw = np.stack([egemaps_functionals(c, 16000) for c in clips])
    together = clip_vectors(raw, stats, ["s1"] * 4)
    assert together.shape == (4, PROSODY_DIM) and together.dtype == np.float32
    assert np.isfinite(together).all()
    varying = np.nanstd(raw, axis=0) > 1e-6
    np.testing.assert_allclose(together[:, varying].mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(together[:, varying].std(0), 1.0, atol=1e-3)
    # alone, or with the speaker unknown: the population statistics (identity here = raw values)
    for speakers in (["s1", "s2", "s3", "s4"], None):
        np.testing.assert_allclose(clip_vectors(raw, stats, speakers), np.nan_to_num(raw),
                                   rtol=1e-5)
    # two speakers given together: each over its own clips
    mixed = clip_vectors(raw, stats, ["a", "b", "a", "b"])
    np.testing.assert_allclose(mixed[[0, 2]][:, varying].mean(0), 0.0, atol=1e-4)


def test_training_vectors_and_population_stats_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    raw = rng.normal(5.0, 2.0, size=(6, PROSODY_DIM))
    norm = raw - 5.0
    norm[0, 3] = np.nan  # a clip too short for openSMILE
    features = pd.DataFrame({"utt_id": [f"u{i}" for i in range(6)], "egemaps": list(raw),
                             "egemaps_spknorm": list(norm)})
    vectors = training_vectors(features, {"u0", "u1"})
    assert set(vectors) == {"u0", "u1"} and vectors["u0"][3] == 0.0
    with pytest.raises(ValueError, match="no eGeMAPS features for 1 clips"):
        training_vectors(features, {"u0", "missing"})
    stats = population_stats(features, {"u0", "u1", "u2"})
    np.testing.assert_allclose(stats["mean"], raw[:3].mean(0))
    save_stats(tmp_path, stats)
    assert load_stats(tmp_path) == json.loads((tmp_path / NORM_FILE).read_text())


def test_missing_or_foreign_stats_are_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="prosody token"):
        load_stats(tmp_path)
    (tmp_path / NORM_FILE).write_text(json.dumps({"names": ["x"], "mean": [0], "std": [1]}))
    with pytest.raises(ValueError, match="other eGeMAPS features"):
        load_stats(tmp_path)


def test_population_vectors_are_what_a_served_clip_of_an_unknown_speaker_gets():
    rng = np.random.default_rng(1)
    raw = rng.normal(3.0, 2.0, size=(5, PROSODY_DIM))
    raw[2, 7] = np.nan
    features = pd.DataFrame({"utt_id": [f"u{i}" for i in range(5)], "egemaps": list(raw),
                             "egemaps_spknorm": list(raw - raw.mean(0))})
    stats = population_stats(features, {"u0", "u1", "u2"})
    vectors = population_vectors(features, {"u1", "u2", "u4"}, stats)
    assert set(vectors) == {"u1", "u2", "u4"}
    served = clip_vectors(raw[[1, 2, 4]], stats)  # one clip at a time, no speaker
    for i, utt in enumerate(("u1", "u2", "u4")):
        np.testing.assert_array_equal(vectors[utt], served[i])
        assert vectors[utt].dtype == np.float32
    expected = (raw[4] - np.nanmean(raw[:3], axis=0)) / np.nanstd(raw[:3], axis=0)
    np.testing.assert_allclose(vectors["u4"], expected, rtol=1e-5)
    assert not np.allclose(vectors["u4"], training_vectors(features, {"u4"})["u4"])
    with pytest.raises(ValueError, match="no eGeMAPS features for 1 clips"):
        population_vectors(features, {"u0", "missing"}, stats)
