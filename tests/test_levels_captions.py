"""Level cut points come from training clips only, and captions say what the levels say."""
import numpy as np
import pandas as pd
import pytest

from components.features.captions import prosody_caption
from components.features.levels import (
    LevelsError,
    apply_levels,
    fit_levels,
    load_levels,
    save_levels,
)


def table(n_per_group: int = 60, seed: int = 0) -> pd.DataFrame:
    """Train/dev/test rows of two corpora; women ~1 octave above men; values all distinct."""
    rng = np.random.default_rng(seed)
    rows = []
    for corpus in ("alpha", "beta"):
        for gender, f0 in (("female", 220.0), ("male", 110.0)):
            for split in ("train", "dev", "test"):
                for _ in range(n_per_group):
                    rows.append({
                        "corpus": corpus, "gender": gender, "split": split,
                        "f0_median_hz": f0 * 2 ** rng.normal(0, 0.2),
                        "f0_range_st": rng.uniform(2, 14),
                        "energy_dbfs": rng.normal(-30, 5),
                        "rate_sps": rng.uniform(2, 7),
                        "pause_ratio": max(0.0, rng.normal(0.05, 0.1)),
                    })
    return pd.DataFrame(rows)


def test_tertiles_split_training_values_into_thirds():
    df = table()
    levels = apply_levels(df, fit_levels(df))
    train = levels[levels["split"] == "train"]
    for (corpus, gender), group in train.groupby(["corpus", "gender"]):
        assert group["pitch_level"].value_counts().to_dict() == {"low": 20, "normal": 20, "high": 20}
    for corpus, group in train.groupby("corpus"):
        assert group["energy_level"].value_counts().to_dict() == {"low": 40, "normal": 40, "high": 40}
        assert group["rate_level"].value_counts().to_dict() == {"slow": 40, "normal": 40, "fast": 40}
        assert group["pitch_range_level"].value_counts().to_dict() == {"narrow": 40, "normal": 40, "wide": 40}


def test_dev_and_test_values_do_not_move_cut_points():
    df = table()
    fitted = fit_levels(df)
    moved = df.copy()
    held_out = moved["split"] != "train"
    for column in ("f0_median_hz", "f0_range_st", "energy_dbfs", "rate_sps", "pause_ratio"):
        moved.loc[held_out, column] = moved.loc[held_out, column] * 3 + 1000
    assert fit_levels(moved) == fitted
    train_only = fit_levels(df[df["split"] == "train"])
    assert train_only == fitted


def test_pitch_is_relative_to_gender():
    df = table()
    levels = apply_levels(df, fit_levels(df))
    cuts = fit_levels(df)["pitch"]["alpha"]
    assert cuts["female"]["source"] == cuts["male"]["source"] == "gender"
    assert cuts["female"]["cuts"][0] > cuts["male"]["cuts"][1]
    a_high_man = {"corpus": "alpha", "gender": "male", "f0_median_hz": 160.0}
    a_low_woman = {"corpus": "alpha", "gender": "female", "f0_median_hz": 160.0}
    rows = pd.DataFrame([a_high_man, a_low_woman]).assign(
        f0_range_st=5.0, energy_dbfs=-30.0, rate_sps=4.0, pause_ratio=0.0)
    assert list(apply_levels(rows, fit_levels(df))["pitch_level"]) == ["high", "low"]
    assert set(levels["pitch_level"]) == {"low", "normal", "high"}


def test_small_gender_group_falls_back_to_corpus_cut_points():
    df = table()
    df = df[~((df["gender"] == "male") & (df["split"] == "train") & (df.index % 6 != 0))]
    fitted = fit_levels(df, min_group_size=30)
    male = fitted["pitch"]["alpha"]["male"]
    assert male["source"] == "corpus" and male["n_gender"] == 10
    pooled = df[(df["corpus"] == "alpha") & (df["split"] == "train")]["f0_median_hz"]
    np.testing.assert_allclose(male["cuts"], np.quantile(pooled, [1 / 3, 2 / 3]))
    assert fitted["pitch"]["alpha"]["female"]["source"] == "gender"


def test_nan_is_unknown_and_pauses_have_their_own_levels():
    df = table()
    fitted = fit_levels(df)
    rows = df.head(4).copy()
    rows["f0_median_hz"] = [np.nan, 200.0, 200.0, 200.0]
    rows["rate_sps"] = [np.nan, 4.0, 4.0, 4.0]
    rows["pause_ratio"] = [np.nan, 0.0, 1e-6, 0.9]
    out = apply_levels(rows, fitted)
    assert out["pitch_level"].iloc[0] == "unknown" and out["rate_level"].iloc[0] == "unknown"
    assert list(out["pause_level"]) == ["unknown", "none", "some", "many"]
    with_pauses = df[(df["split"] == "train") & (df["corpus"] == "alpha") & (df["pause_ratio"] > 0)]
    assert fitted["pause"]["alpha"]["cut"] == pytest.approx(with_pauses["pause_ratio"].median())


def test_unknown_corpus_or_gender_is_an_error():
    df = table()
    fitted = fit_levels(df)
    with pytest.raises(LevelsError, match="gamma"):
        apply_levels(df.head(2).assign(corpus="gamma"), fitted)
    with pytest.raises(LevelsError, match="unknown"):
        apply_levels(df.head(2).assign(gender="unknown"), fitted)


def test_fitting_needs_training_rows_and_columns():
    df = table()
    with pytest.raises(LevelsError, match="no training rows"):
        fit_levels(df[df["split"] != "train"])
    with pytest.raises(LevelsError, match="rate_sps"):
        fit_levels(df.drop(columns=["rate_sps"]))
    with pytest.raises(LevelsError, match="energy levels of corpus 'alpha'"):
        fit_levels(df.assign(energy_dbfs=np.nan))


def test_levels_round_trip_through_json(tmp_path):
    df = table()
    fitted = fit_levels(df)
    save_levels(tmp_path / "levels.json", fitted)
    assert load_levels(tmp_path / "levels.json") == fitted
    (tmp_path / "other.json").write_text('{"pitch": {}}')
    with pytest.raises(LevelsError, match="not a levels file"):
        load_levels(tmp_path / "other.json")


def test_caption_from_levels():
    row = {"pitch_level": "high", "pitch_range_level": "wide", "contour": "rising",
           "energy_level": "high", "rate_level": "fast", "pause_level": "many"}
    assert prosody_caption(row) == "pitch high, wide range, rising intonation; energy loud; rate fast; many pauses"
    row.update(pitch_level="unknown", pitch_range_level="unknown", contour="uncertain",
               energy_level="low", rate_level="unknown", pause_level="none")
    assert prosody_caption(row) == "pitch not measured, intonation uncertain; energy soft; rate not measured; no pauses"
    row.update(contour="too_short")
    assert "too little voicing for intonation" in prosody_caption(row)


def test_caption_rejects_missing_or_unknown_values():
    row = {"pitch_level": "high", "pitch_range_level": "wide", "contour": "rising",
           "energy_level": "high", "rate_level": "fast"}
    with pytest.raises(ValueError, match="pause_level"):
        prosody_caption(row)
    with pytest.raises(ValueError, match="contour"):
        prosody_caption({**row, "pause_level": "none", "contour": "wobbly"})
