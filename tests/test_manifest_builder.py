"""The manifest builder: label maps, consensus, agreement, exclusions, splits, probing."""
import json

import numpy as np
import pytest
import soundfile as sf

from components.config import SplitConfig
from components.prepare.manifest import build_manifest, plurality
from components.prepare.records import LoadedCorpus, RawUtterance
from components.prepare.schema import MANIFEST_COLUMNS, read_manifest, write_manifest


def _wav(path, seconds=1.0, sr=16000):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, 0.1 * np.sin(np.arange(int(seconds * sr)) * 0.05), sr)


def _utt(i, votes, speaker="s1", gender="female", consensus=None, split=None):
    return RawUtterance(utt_id=f"u{i}", audio_path=f"a/u{i}.wav", speaker=speaker,
                        gender=gender, votes=votes, consensus_code=consensus, split=split)


def test_plurality_needs_a_unique_winner_and_the_minimum_share():
    assert plurality(["sad", "sad", "angry"], 0.0) == "sad"
    assert plurality(["sad", "angry"], 0.0) == ""
    assert plurality(["sad", "sad", "angry", "happy", "neutral"], 0.5) == ""
    assert plurality([], 0.0) == ""


def test_votes_map_through_the_corpus_codes_and_label_set(tmp_path):
    for i in range(4):
        _wav(tmp_path / "a" / f"u{i}.wav", seconds=1 + i)
    loaded = LoadedCorpus([
        _utt(0, [("r1", "A"), ("r2", "A"), ("r3", "S")]),                  # angry by plurality
        _utt(1, [("r1", "A"), ("r2", "S")], speaker="s2"),                   # tie -> no agreement
        _utt(2, [("r1", "C"), ("r2", "N"), ("r3", "Q")], speaker="s3"),      # C and Q not kept
        _utt(3, [("r1", "C")], speaker="s4"),                                # nothing kept
    ])
    df, meta, excluded = build_manifest(
        loaded, "msp_podcast", tmp_path, labels=["neutral", "happy", "sad", "angry"],
        label_map={}, min_agreement=0.0, split_cfg=SplitConfig(), seed=1,
    )
    rows = df.set_index("utt_id")
    assert rows.loc["u0", "label"] == "angry"
    assert rows.loc["u0", "agreement"] == pytest.approx(2 / 3)
    assert json.loads(rows.loc["u0", "label_distribution"]) == pytest.approx(
        {"angry": 2 / 3, "sad": 1 / 3}, abs=1e-5)
    assert rows.loc["u1", "label"] == ""
    assert list(rows.loc["u2", "annotator_labels"]) == ["neutral"]
    assert list(rows.loc["u2", "annotator_ids"]) == ["r2"]
    assert meta.unmapped == {"code:Q": 1, "label:contempt": 2}
    assert excluded.to_dict("records") == [{"utt_id": "u3", "reason": "no rating in the label set"}]
    assert any("excluded" in p for p in meta.problems)
    assert rows.loc["u1", "duration_s"] == pytest.approx(2.0)
    assert rows.loc["u1", "sample_rate"] == 16000


def test_label_map_merges_and_official_consensus_wins(tmp_path):
    loaded = LoadedCorpus([
        _utt(0, [("intended", "02")], consensus="02"),
        _utt(1, [("intended", "01")], consensus="01", speaker="s2"),
    ])
    df, meta, _ = build_manifest(loaded, "ravdess", tmp_path, labels=None,
                                 label_map={"calm": "neutral"}, min_agreement=0.0,
                                 split_cfg=SplitConfig(), seed=1)
    assert list(df["label"]) == ["neutral", "neutral"]
    assert "calm" not in meta.labels and len(meta.labels) == 7
    # Missing audio is not an error here: the gate quarantines it.
    assert df["duration_s"].isna().all() and (df["sample_rate"] == 0).all()


def test_no_agreement_code_and_official_splits(tmp_path):
    loaded = LoadedCorpus([
        _utt(0, [("w1", "Angry"), ("w2", "Sad")], consensus="X", split="train"),
        _utt(1, [("w1", "Happy")], consensus="H", speaker="Unknown", split="test"),
        _utt(2, [("w1", "Happy")], consensus="H", speaker="Unknown", split="dev"),
    ])
    df, _, _ = build_manifest(loaded, "msp_podcast", tmp_path, None, {}, 0.0, SplitConfig(), 1)
    assert list(df["label"]) == ["", "happy", "happy"]
    assert list(df["split"]) == ["train", "test", "dev"]
    assert df["speaker"].nunique() == 3  # unknown voices are never pooled into one speaker


def test_drawn_splits_are_speaker_disjoint_and_roundtrip(tmp_path):
    utts = [_utt(i, [("r", "H")], speaker=f"spk{i % 10}", gender=("female", "male")[i % 2])
            for i in range(60)]
    df, meta, _ = build_manifest(LoadedCorpus(utts), "cremad", tmp_path, None, {}, 0.0,
                                 SplitConfig(), seed=3)
    assert (df.groupby("speaker")["split"].nunique() == 1).all()
    assert set(df["split"]) == {"train", "dev", "test"}
    write_manifest(df, meta, tmp_path / "m" / "manifest.parquet")
    back, meta_back = read_manifest(tmp_path / "m" / "manifest.parquet")
    assert list(back.columns) == list(MANIFEST_COLUMNS)
    assert meta_back.n_rows == 60 and meta_back.labels == meta.labels
    assert list(back.loc[0, "annotator_labels"]) == ["happy"]


def test_duplicate_ids_and_bad_label_names_fail(tmp_path):
    dup = LoadedCorpus([_utt(0, [("r", "H")]), _utt(0, [("r", "S")])])
    with pytest.raises(ValueError, match="duplicate utterance ids"):
        build_manifest(dup, "cremad", tmp_path, None, {}, 0.0, SplitConfig(), 1)
    one = LoadedCorpus([_utt(0, [("r", "H")])])
    with pytest.raises(ValueError, match="not a canonical label"):
        build_manifest(one, "cremad", tmp_path, ["joy"], {}, 0.0, SplitConfig(), 1)
    with pytest.raises(ValueError, match="label_map"):
        build_manifest(one, "cremad", tmp_path, None, {"calm": "serene"}, 0.0, SplitConfig(), 1)
    with pytest.raises(ValueError, match="unknown corpus"):
        build_manifest(one, "nocorpus", tmp_path, None, {}, 0.0, SplitConfig(), 1)
