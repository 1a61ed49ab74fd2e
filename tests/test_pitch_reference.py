"""New audio has no gender label: its pitch level is judged against the cut points of the
gender group nearest its F0, and the output says which."""
import math

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from components.features.levels import fit_levels, save_levels
from components.serve.predictor import cues_of
from components.speechlm.zeroshot import clip_cues, pitch_reference


@pytest.fixture(scope="module")
def levels():
    """Male clip medians 100-150 Hz (cuts ~117/133), female 180-250 Hz (cuts ~203/227)."""
    n = 40
    return fit_levels(pd.DataFrame({
        "corpus": "demo", "split": "train", "gender": ["male"] * n + ["female"] * n,
        "f0_median_hz": np.r_[np.linspace(100, 150, n), np.linspace(180, 250, n)],
        "f0_range_st": np.linspace(2, 14, 2 * n), "energy_dbfs": np.linspace(-35, -12, 2 * n),
        "rate_sps": np.linspace(2.5, 6.5, 2 * n), "pause_ratio": np.linspace(0, 0.3, 2 * n)}))


def test_the_nearest_gender_groups_cut_points_are_chosen(levels):
    cuts = {g: levels["pitch"]["demo"][g]["cuts"] for g in ("male", "female")}
    centres = {g: math.sqrt(c[0] * c[1]) for g, c in cuts.items()}
    boundary = math.sqrt(centres["male"] * centres["female"])
    assert 155 < boundary < 170  # between typical male and female medians
    assert pitch_reference(levels, "demo", 120.0) == ("male", "estimated male (F0 120 Hz)")
    assert pitch_reference(levels, "demo", boundary - 2)[0] == "male"
    assert pitch_reference(levels, "demo", boundary + 2)[0] == "female"
    assert pitch_reference(levels, "demo", 240.0) == ("female", "estimated female (F0 240 Hz)")
    assert pitch_reference(levels, "demo", math.nan) == \
        ("female", "female, by default (no voiced F0)")


def test_without_gender_specific_cut_points_the_corpus_cuts_are_said_so(levels):
    pooled = {**levels, "pitch": {"demo": {
        g: {**e, "source": "corpus"} for g, e in levels["pitch"]["demo"].items()}}}
    assert pitch_reference(pooled, "demo", 120.0)[1] == "corpus (no gender-specific cut points)"


def tone(f0: float, seconds: float = 1.5) -> np.ndarray:
    t = np.arange(int(16000 * seconds)) / 16000
    return (0.3 * np.sin(2 * np.pi * f0 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
            ).astype(np.float32)


def test_a_low_voice_gets_male_cuts_and_a_high_voice_female_cuts(levels, tmp_path):
    save_levels(tmp_path / "levels.json", levels)
    paths = []
    for f0 in (120, 215):
        paths.append(tmp_path / f"tone{f0}.wav")
        sf.write(paths[-1], tone(f0), 16000)
    low, high = clip_cues(paths, "pocketsphinx", tmp_path / "levels.json").to_dict("records")
    assert low["gender"] == "male" and high["gender"] == "female"
    # against the other group's cuts these would read low (120 Hz) and high (215 Hz)
    assert low["pitch_level"] == "normal" and high["pitch_level"] == "normal"
    assert low["pitch_reference"].startswith("estimated male (F0 1")
    assert high["pitch_reference"].startswith("estimated female (F0 2")
    assert cues_of(low)["pitch_reference"] == low["pitch_reference"]


def test_the_features_stages_clips_report_their_labelled_gender():
    assert cues_of({"gender": "male"})["pitch_reference"] == "labelled male"
