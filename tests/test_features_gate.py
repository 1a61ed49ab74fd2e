"""The features gate quarantines single implausible clips instead of failing the run, and writes
the gated manifest (the clips it let through) only when it passes."""
import json

import pandas as pd
import pytest

from components.config import FeaturesGateConfig
from components.gates.features_gate import run_features_gate
from components.gates.gx_report import GateFailed, raise_if_failed
from components.prepare.schema import ManifestMeta, read_manifest, write_manifest
from tests.test_manifest_gate import LABELS, SPEAKERS, make_row

N_PER_SPEAKER = 6


def measured(utt_id: str, speaker: str, f0_median_hz: float = 180.0) -> dict:
    """A features row that passes every check of the gate."""
    return {
        "utt_id": utt_id, "speaker": speaker, "duration_s": 2.0, "transcript": "Open the door.",
        "transcript_source": "reference", "prosody_caption": "pitch normal", "flags": [],
        "intonation": "falling", "f0_median_hz": f0_median_hz, "energy_dbfs": -22.0,
        "rate_sps": 4.0, "pause_ratio": 0.1, "egemaps": [0.5] * 88,
        "egemaps_spknorm": [0.0] * 88, "pitch_level": "normal", "pitch_range_level": "normal",
        "energy_level": "normal", "rate_level": "normal",
    }


def write_inputs(tmp_path, f0: dict[str, float]) -> FeaturesGateConfig:
    """A 24-clip manifest and its features (F0 medians overridden by `f0`); the gate's config."""
    ids = [(f"{spk}_{i}", spk) for spk in SPEAKERS for i in range(N_PER_SPEAKER)]
    manifest = pd.DataFrame([make_row(u, spk, ["sad", "sad", "happy"]) for u, spk in ids])
    write_manifest(manifest, ManifestMeta("demo", str(tmp_path), LABELS),
                   tmp_path / "manifest.parquet")
    pd.DataFrame([measured(u, spk, f0.get(u, 180.0)) for u, spk in ids]).to_parquet(
        tmp_path / "features.parquet", index=False)
    return FeaturesGateConfig(features=str(tmp_path / "features.parquet"),
                              manifest=str(tmp_path / "manifest.parquet"),
                              report_dir=str(tmp_path / "report"), out=str(tmp_path / "gated"))


@pytest.mark.parametrize("f0, reason", [
    (900.0, "F0 median 900.0 Hz outside f0_min_hz..f0_max_hz (50-600 Hz)"),
    (30.0, "F0 median 30.0 Hz outside f0_min_hz..f0_max_hz (50-600 Hz)"),
])
def test_one_clip_with_f0_out_of_range_is_quarantined_and_the_gate_passes(tmp_path, f0, reason):
    cfg = write_inputs(tmp_path, {"spk1_2": f0})
    result = run_features_gate(cfg)
    assert result.success, result.failed
    assert result.n_quarantined == 1
    quarantine = pd.read_csv(tmp_path / "report" / "quarantine.csv")
    assert quarantine.to_dict("records") == [
        {"utt_id": "spk1_2", "audio_path": "audio/spk1_2.wav", "reason": reason}]
    gated, meta = read_manifest(tmp_path / "gated" / "manifest.parquet")
    manifest, _ = read_manifest(cfg.manifest)
    assert gated["utt_id"].tolist() == [u for u in manifest["utt_id"] if u != "spk1_2"]
    assert (meta.n_rows, meta.labels, meta.data_root) == (23, LABELS, str(tmp_path))
    report = json.loads(result.report_path.read_text())
    assert report["gated_manifest"] == str(tmp_path / "gated" / "manifest.parquet")


def test_many_clips_with_f0_out_of_range_fail_the_gate_naming_the_bound(tmp_path):
    cfg = write_inputs(tmp_path, {"spk1_0": 900.0, "spk2_0": 20.0, "spk3_0": 800.0})
    assert run_features_gate(cfg).success is False  # 3 of 24 (12.5%) > 5%
    assert not (tmp_path / "gated" / "manifest.parquet").exists()
    quarantine = pd.read_csv(tmp_path / "report" / "quarantine.csv")
    assert quarantine["utt_id"].tolist() == ["spk1_0", "spk2_0", "spk3_0"]
    with pytest.raises(GateFailed, match=r"max_unusable_share = 5\.0%") as failure:
        raise_if_failed(run_features_gate(cfg))
    assert "3 of 24 rows" in str(failure.value) and "F0 median 900.0 Hz" in str(failure.value)
    cfg.max_unusable_share = 0.15
    assert run_features_gate(cfg).success
    assert len(read_manifest(tmp_path / "gated" / "manifest.parquet")[0]) == 21
