"""The features stage end to end on a tiny demo corpus: contract, levels, shards, cache, bad
clips, Ray, and the features gate."""
import json
import os

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from components.config import (DemoConfig, FeaturesConfig, FeaturesGateConfig, Params,
                               SplitConfig)
from components.features import extract as extract_mod
from components.features.frames import iter_shard
from components.features.stage import build_features, run_features, run_parallel
from components.features.extract import ClipJob, clip_f0_median
from components.gates.features_gate import run_features_gate
from tests.demo_fixture import demo_manifest
from components.prepare.schema import write_manifest

CONTRACT = ["utt_id", "f0_median_hz", "f0_p5_st", "f0_p95_st", "f0_range_st", "f0_sd_st",
            "energy_dbfs", "rate_sps", "pause_ratio", "jitter", "shimmer", "hnr_db",
            "intonation", "pitch_level", "energy_level", "rate_level", "egemaps", "transcript",
            "transcript_source", "prosody_caption", "flags"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    df, _ = demo_manifest(root, 16, 4, 3, SplitConfig(train=0.5, dev=0.0, test=0.5))
    return root, df


def _params(tmp_path, **features):
    params = Params()
    settings = {"cache_dir": str(tmp_path / "cache"), "workers": 1, "shard_size": 5, **features}
    params.features = FeaturesConfig(**settings)
    return params


def test_stage_writes_the_contract_levels_and_shards(corpus, tmp_path):
    root, df = corpus
    out = tmp_path / "features"
    summary = run_features(_params(tmp_path, workers=2), root / "manifest.parquet", out, None)
    feats = pd.read_parquet(out / "features.parquet")
    assert list(feats["utt_id"]) == list(df["utt_id"]) and summary["clips"] == len(df)
    assert set(CONTRACT) <= set(feats.columns)
    assert all(len(v) == 88 and np.isfinite(v).all() for v in feats["egemaps"])
    assert feats["f0_median_hz"].between(50, 600).all()
    assert (feats["transcript_source"] == "reference").all()
    assert set(feats["pitch_level"]) <= {"low", "normal", "high"}
    assert all(c.startswith("pitch ") for c in feats["prosody_caption"])
    levels = json.loads((out / "levels.json").read_text())
    train = feats[feats["split"] == "train"]
    cuts = levels["energy"]["demo"]["cuts"]
    assert cuts == pytest.approx(list(np.quantile(train["energy_dbfs"], [1 / 3, 2 / 3])))
    index = pd.read_parquet(out / "frames" / "index.parquet")
    assert list(index["utt_id"]) == list(df["utt_id"])
    assert index["shard"].nunique() == 4  # 16 clips, 5 per shard
    shard = dict(iter_shard(out / "frames" / index["shard"].iloc[0]))
    first = shard[index["utt_id"].iloc[0]]
    assert first.shape == (index["n_frames"].iloc[0], 83)
    assert abs(first.shape[0] - feats["duration_s"].iloc[0] * 100) <= 2


def test_given_levels_are_reused_not_refitted(corpus, tmp_path):
    root, df = corpus
    params = _params(tmp_path, frames=False)
    first, levels = build_features(df, root / "audio", params.features, tmp_path)
    shifted = json.loads(json.dumps(levels))
    shifted["energy"]["demo"]["cuts"] = [-200.0, -199.0]  # everything is "high"
    test_only = df[df["split"] == "test"]
    again, used = build_features(test_only, root / "audio", params.features, tmp_path, shifted)
    assert used == shifted and (again["energy_level"] == "high").all()


def test_cache_resumes_after_a_crash_and_only_new_clips_are_measured(corpus, tmp_path,
                                                                     monkeypatch):
    root, df = corpus
    params = _params(tmp_path, frames=False)
    _, levels = build_features(df, root / "audio", params.features, tmp_path)
    params.features.cache_dir = str(tmp_path / "fresh-cache")
    last = sorted(df["speaker"].unique())[-1]
    first_speakers = df[df["speaker"] != last]
    calls = []
    real = extract_mod._measure

    def crashing(job):
        if len(calls) == 5:
            raise RuntimeError("killed")
        calls.append(job.utt_id)
        return real(job)

    monkeypatch.setattr(extract_mod, "_measure", crashing)
    with pytest.raises(RuntimeError, match="killed"):
        build_features(first_speakers, root / "audio", params.features, tmp_path, levels)
    assert len(calls) == 5
    monkeypatch.setattr(extract_mod, "_measure",
                        lambda job: (calls.append(job.utt_id), real(job))[1])
    build_features(first_speakers, root / "audio", params.features, tmp_path, levels)
    # the five clips finished before the crash came from the cache
    assert sorted(calls) == sorted(first_speakers["utt_id"])
    build_features(df, root / "audio", params.features, tmp_path, levels)
    # a new speaker's clips are measured; nobody else's
    assert sorted(calls[len(first_speakers):]) == sorted(df.loc[df["speaker"] == last, "utt_id"])


def test_bad_clips_are_flagged_never_crash_and_the_gate_quarantines(corpus, tmp_path):
    root, df = corpus
    sr = 16000
    rng = np.random.default_rng(0)
    bad = {
        "silent": np.zeros(sr, dtype=np.float32),
        "short": 0.3 * np.sin(2 * np.pi * 150 * np.arange(int(0.1 * sr)) / sr),
        "clipped": np.clip(3 * np.sin(2 * np.pi * 150 * np.arange(sr) / sr), -1, 1),
        "noise": 0.2 * rng.standard_normal(sr),
    }
    rows = []
    for name, audio in bad.items():
        sf.write(root / "audio" / f"{name}.wav", audio.astype(np.float32), sr)
        rows.append({**df.iloc[0].to_dict(), "utt_id": name, "audio_path": f"{name}.wav"})
    manifest = pd.concat([df, pd.DataFrame(rows)], ignore_index=True)
    feats, _ = build_features(manifest, root / "audio", _params(tmp_path, frames=False).features,
                              tmp_path)
    by_id = feats.set_index("utt_id")
    assert "silent" in by_id.loc["silent", "flags"]
    assert "too_short" in by_id.loc["short", "flags"]
    assert "clipped" in by_id.loc["clipped", "flags"]
    assert np.isnan(by_id.loc["silent", "f0_median_hz"])
    assert by_id.loc["silent", "pitch_level"] == "unknown"
    feats.to_parquet(tmp_path / "features.parquet", index=False)
    write_manifest(manifest, _meta(root), tmp_path / "manifest.parquet")
    cfg = FeaturesGateConfig(features=str(tmp_path / "features.parquet"),
                             manifest=str(tmp_path / "manifest.parquet"),
                             report_dir=str(tmp_path / "report"), out=str(tmp_path / "gated"),
                             max_unusable_share=0.5,
                             max_too_short_share=0.5, max_uncertain_share=0.5)
    result = run_features_gate(cfg)
    quarantine = pd.read_csv(tmp_path / "report" / "quarantine.csv")
    assert {"silent"} <= set(quarantine["utt_id"])
    assert result.success
    cfg.max_unusable_share = 0.01
    failed = run_features_gate(cfg)
    assert not failed.success
    assert any(f["column"] == "unusable" for f in failed.failed)


def _meta(root):
    from components.prepare.schema import ManifestMeta
    return ManifestMeta(corpus="demo", data_root=str(root / "audio"), labels=DemoConfig().emotions)


def test_gate_fails_on_missing_rows(corpus, tmp_path):
    root, df = corpus
    feats, _ = build_features(df, root / "audio", _params(tmp_path, frames=False).features,
                              tmp_path)
    cfg = FeaturesGateConfig(features=str(tmp_path / "f.parquet"),
                             manifest=str(root / "manifest.parquet"),
                             report_dir=str(tmp_path / "report"), out=str(tmp_path / "gated"))
    feats.to_parquet(cfg.features, index=False)
    assert run_features_gate(cfg).success
    assert (tmp_path / "gated" / "manifest.parquet").is_file()
    feats.iloc[1:].to_parquet(cfg.features, index=False)
    failed = {f["expectation"] for f in run_features_gate(cfg).failed}
    assert "expect_table_row_count_to_equal" in failed
    assert not (tmp_path / "gated" / "manifest.parquet").exists()  # no stale gated set


@pytest.mark.slow
def test_ray_engine_gives_the_same_results_as_the_process_pool(corpus, tmp_path):
    root, df = corpus
    jobs = [ClipJob(utt_id=r.utt_id, audio=str(root / "audio" / r.audio_path),
                    cache_dir=str(tmp_path / "cache")) for r in df.iloc[:4].itertuples()]
    local = run_parallel(clip_f0_median, jobs, FeaturesConfig(workers=2), "f0")
    on_ray = run_parallel(clip_f0_median, jobs, FeaturesConfig(workers=2, engine="ray"), "f0")
    assert [r["utt_id"] for r in on_ray] == [j.utt_id for j in jobs]
    assert [r["f0_median_hz"] for r in on_ray] == pytest.approx([r["f0_median_hz"] for r in local])
    with pytest.raises(ValueError, match="features.engine"):
        run_parallel(clip_f0_median, jobs, FeaturesConfig(engine="spark"), "f0")


def test_clips_without_a_reference_are_transcribed_and_wer_is_kept_when_asked(corpus,
                                                                              tmp_path):
    root, df = corpus
    two = df.head(2).copy()
    two.loc[0, "transcript"] = ""
    feats, _ = build_features(two, root / "audio",
                              _params(tmp_path, frames=False, asr_on_reference=True).features,
                              tmp_path, levels=_levels_for(df, root, tmp_path))
    asr_row, ref_row = feats.iloc[0], feats.iloc[1]
    assert asr_row["transcript_source"] == "asr:moonshine"  # the default transcriber
    assert 0.0 <= asr_row["asr_confidence"] <= 1.0 and np.isnan(asr_row["asr_wer"])
    assert ref_row["transcript_source"] == "reference"
    assert ref_row["transcript"] == two.iloc[1]["transcript"]
    assert ref_row["asr_wer"] >= 0.0  # never asserting what ASR hears in eSpeak


def _levels_for(df, root, tmp_path):
    params = _params(tmp_path / "levels", frames=False)
    return build_features(df, root / "audio", params.features, tmp_path)[1]


def test_a_reference_of_punctuation_only_keeps_the_clip_with_no_wer(corpus, tmp_path):
    """A reference with no words has no defined WER: the clip is measured, WER left NaN."""
    root, df = corpus
    one = df.head(1).copy()
    one.loc[one.index[0], "transcript"] = "... ?!"
    feats, _ = build_features(one, root / "audio",
                              _params(tmp_path, frames=False, asr_on_reference=True).features,
                              tmp_path, levels=_levels_for(df, root, tmp_path))
    row = feats.iloc[0]
    assert row["transcript"] == "... ?!" and row["transcript_source"] == "reference"
    assert np.isnan(row["asr_wer"]) and np.isfinite(row["f0_median_hz"])


def test_speech_recognition_beside_the_measurements_gives_the_same_row(corpus, monkeypatch):
    """A concurrent transcriber runs on its own thread while the clip is measured; the row is
    the one the same transcriber gives in line, and its errors still reach the caller."""
    root, df = corpus
    job = ClipJob(utt_id="u", audio=str(root / "audio" / df.iloc[0]["audio_path"]), frames=True)
    transcriber = extract_mod._transcriber(job.asr, os.getpid())
    assert transcriber.concurrent
    beside, frames_beside = extract_mod._measure(job)
    monkeypatch.setattr(transcriber, "concurrent", False)
    in_line, frames_in_line = extract_mod._measure(job)
    assert beside == in_line and beside["transcript_source"] == "asr:moonshine"
    np.testing.assert_array_equal(frames_beside, frames_in_line)

    def fails(audio):
        raise RuntimeError("recogniser crashed")

    monkeypatch.setattr(transcriber, "concurrent", True)
    monkeypatch.setattr(transcriber, "transcribe", fails)
    with pytest.raises(RuntimeError, match="recogniser crashed"):
        extract_mod._measure(job)
