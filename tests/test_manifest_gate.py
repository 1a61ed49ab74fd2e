"""The manifest gate passes a clean manifest and names the expectation each planted fault fails."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from components.config import ManifestGateConfig
from components.gates.gx_report import GateFailed, raise_if_failed
from components.gates.manifest_gate import run_manifest_gate
from components.prepare.schema import ManifestMeta, read_manifest, write_manifest

SR = 16000
LABELS = ["neutral", "happy", "sad", "angry"]
SPEAKERS = {"spk1": ("female", "train"), "spk2": ("male", "train"),
            "spk3": ("female", "dev"), "spk4": ("male", "test")}


def write_tone(path: Path, seconds: float = 0.5, amplitude: float = 0.2) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * SR)) / SR
    sf.write(path, (amplitude * np.sin(2 * np.pi * 220 * t)).astype(np.float32), SR,
             subtype="PCM_16")


def make_row(utt_id: str, speaker: str, votes: list[str], label: str | None = None,
             seconds: float = 0.5) -> dict:
    """A manifest row whose consensus, distribution and agreement follow from `votes`."""
    gender, split = SPEAKERS[speaker]
    counts = pd.Series(votes, dtype="object").value_counts()
    top = counts[counts == counts.max()].index.tolist() if votes else []
    return {
        "utt_id": utt_id, "corpus": "demo", "audio_path": f"audio/{utt_id}.wav",
        "speaker": speaker, "gender": gender, "split": split,
        "duration_s": seconds, "sample_rate": SR, "transcript": "",
        "label": label if label is not None else (top[0] if len(top) == 1 else ""),
        "annotator_ids": [f"a{i}" for i in range(len(votes))],
        "annotator_labels": list(votes),
        "label_distribution": json.dumps({k: v / len(votes) for k, v in counts.items()}),
        "agreement": float(counts.max() / len(votes)) if votes else 0.0,
        "n_annotators": len(votes),
    }


def good_rows() -> list[dict]:
    votes = [["happy", "happy", "sad"], ["sad", "sad", "sad"], ["angry", "neutral"],
             ["neutral", "neutral", "happy"]]
    return [make_row(f"{spk}_{i}", spk, votes[(n + i) % 4])
            for n, spk in enumerate(SPEAKERS) for i in range(5)]


def build(tmp_path: Path, rows: list[dict], write_audio: bool = True) -> Path:
    """Write the audio of `rows` (tones of their duration) and the manifest; return its path."""
    root = tmp_path / "corpus"
    if write_audio:
        for row in rows:
            write_tone(root / row["audio_path"], row["duration_s"])
    path = tmp_path / "prepared" / "manifest.parquet"
    write_manifest(pd.DataFrame(rows), ManifestMeta("demo", str(root), LABELS), path)
    return path


def config(tmp_path: Path, **overrides) -> ManifestGateConfig:
    return ManifestGateConfig(
        manifest=str(tmp_path / "prepared" / "manifest.parquet"),
        out=str(tmp_path / "gated"), report_dir=str(tmp_path / "report"),
        min_duration_s=0.2, max_duration_s=5.0, **overrides,
    )


def failed_checks(result) -> set[tuple[str, str | None]]:
    return {(e["expectation"], e["column"]) for e in result.failed}


def test_clean_manifest_passes_and_writes_every_output(tmp_path):
    rows = good_rows()
    result = run_manifest_gate(build(tmp_path, rows), config(tmp_path))
    assert result.success, result.failed
    assert (result.n_rows, result.n_quarantined, result.failed) == (len(rows), 0, [])
    raise_if_failed(result)

    report = json.loads(result.report_path.read_text())
    assert result.report_path == tmp_path / "report" / "result.json"
    assert report["success"] is True and report["n_rows"] == len(rows)
    assert report["quarantine_share"] == 0.0
    checked = {(e["expectation"], e["column"]) for e in report["expectations"]}
    assert ("expect_column_values_to_be_unique", "utt_id") in checked
    assert ("expect_column_values_to_be_in_set", "speaker_split_count") in checked
    assert all(e["success"] for e in report["expectations"])
    assert (tmp_path / "report" / report["data_docs"]).is_file()
    assert "manifest" in (tmp_path / "report" / "data_docs" / "index.html").read_text()

    quarantine = pd.read_csv(tmp_path / "gated" / "quarantine.csv")
    assert list(quarantine.columns) == ["utt_id", "audio_path", "reason"] and quarantine.empty
    gated, meta = read_manifest(tmp_path / "gated" / "manifest.parquet")
    assert gated["utt_id"].tolist() == [r["utt_id"] for r in rows]
    assert (meta.n_rows, meta.data_root, meta.labels) == (len(rows), str(tmp_path / "corpus"),
                                                          LABELS)


def _with_fault(rows: list[dict], fault: str) -> list[dict]:
    if fault == "speaker_in_two_splits":
        rows[-1] = {**rows[-1], "split": "train"}  # spk4 is otherwise in test
    elif fault == "label_outside_set":
        rows[0] = make_row(rows[0]["utt_id"], "spk1", ["bored", "bored", "happy"])
    elif fault == "duplicate_utt_id":
        rows[1] = {**rows[1], "utt_id": rows[0]["utt_id"]}
    elif fault == "zero_annotators":
        rows[0] = make_row(rows[0]["utt_id"], "spk1", [])
    elif fault == "consensus_against_votes":
        rows[0] = make_row(rows[0]["utt_id"], "spk1", ["sad", "sad", "happy"], label="happy")
    return rows


@pytest.mark.parametrize("fault, expectation, column, example", [
    ("speaker_in_two_splits", "expect_column_values_to_be_in_set", "speaker_split_count",
     "spk4_0"),
    ("label_outside_set", "expect_column_values_to_be_in_set", "label", "spk1_0"),
    ("label_outside_set", "expect_column_values_to_be_in_set", "unknown_annotator_labels",
     "spk1_0"),
    ("duplicate_utt_id", "expect_column_values_to_be_unique", "utt_id", "spk1_0"),
    ("zero_annotators", "expect_column_values_to_be_between", "n_votes", "spk1_0"),
    ("consensus_against_votes", "expect_column_values_to_be_in_set", "consensus_consistent",
     "spk1_0"),
])
def test_planted_fault_fails_the_named_expectation(tmp_path, fault, expectation, column,
                                                    example):
    result = run_manifest_gate(build(tmp_path, _with_fault(good_rows(), fault)),
                               config(tmp_path))
    assert not result.success
    assert (expectation, column) in failed_checks(result)
    entry = next(e for e in result.failed if (e["expectation"], e["column"]) == (expectation,
                                                                                 column))
    assert example in [x["utt_id"] for x in entry["examples"]]
    # the outputs are there to inspect, but no gated manifest is left behind
    report = json.loads(result.report_path.read_text())
    assert report["success"] is False and report["gated_manifest"] is None
    assert (tmp_path / "gated" / "quarantine.csv").is_file()
    assert not (tmp_path / "gated" / "manifest.parquet").exists()
    with pytest.raises(GateFailed, match=rf"{column}.*{example}"):
        raise_if_failed(result)


def test_failed_gate_names_the_bad_annotator_label(tmp_path):
    rows = _with_fault(good_rows(), "label_outside_set")
    result = run_manifest_gate(build(tmp_path, rows), config(tmp_path))
    entry = next(e for e in result.failed if e["column"] == "unknown_annotator_labels")
    assert entry["examples"] == [
        {"unknown_annotator_labels": "bored", "utt_id": "spk1_0", "speaker": "spk1"}
    ]
    assert entry["unexpected_count"] == 1


def _plant_bad_audio(tmp_path: Path) -> tuple[list[dict], dict[str, str]]:
    """Good rows plus five with broken audio; returns the rows and utt_id -> reason word."""
    root = tmp_path / "corpus"
    rows = good_rows()
    bad = {name: make_row(name, "spk1", ["sad", "sad"]) for name in
           ("empty", "truncated", "text", "missing", "escape", "silent")}
    bad["escape"]["audio_path"] = "../outside.wav"
    rows += list(bad.values())
    for row in rows:
        if row["utt_id"] not in bad:
            write_tone(root / row["audio_path"], row["duration_s"])
    sf.write(root / "audio/empty.wav", np.zeros(0, np.float32), SR)
    write_tone(root / "audio/truncated.wav")
    data = (root / "audio/truncated.wav").read_bytes()
    (root / "audio/truncated.wav").write_bytes(data[: len(data) // 2])
    (root / "audio/text.wav").write_text("not audio at all\n")
    write_tone(tmp_path / "outside.wav")  # exists, but outside the data root
    sf.write(root / "audio/silent.wav", np.zeros(SR // 2, np.float32), SR)
    reasons = {"empty": "no samples", "truncated": "truncated", "text": "unreadable",
               "missing": "missing", "escape": "unsafe path", "silent": "silent"}
    return rows, reasons


def test_bad_audio_is_quarantined_with_reasons_and_removed(tmp_path):
    rows, reasons = _plant_bad_audio(tmp_path)
    path = build(tmp_path, rows, write_audio=False)
    result = run_manifest_gate(path, config(tmp_path, max_quarantine_share=0.25))
    assert result.success, result.failed
    assert result.n_quarantined == len(reasons)

    quarantine = pd.read_csv(tmp_path / "gated" / "quarantine.csv", keep_default_na=False)
    by_id = dict(zip(quarantine["utt_id"], quarantine["reason"]))
    assert set(by_id) == set(reasons)
    for utt_id, word in reasons.items():
        assert word in by_id[utt_id], (utt_id, by_id[utt_id])
    assert dict(zip(quarantine["utt_id"], quarantine["audio_path"]))["escape"] == "../outside.wav"

    gated, meta = read_manifest(tmp_path / "gated" / "manifest.parquet")
    assert set(gated["utt_id"]) == {r["utt_id"] for r in rows} - set(reasons)
    assert meta.n_rows == len(gated) == len(rows) - len(reasons)
    report = json.loads(result.report_path.read_text())
    assert report["quarantine_share"] == pytest.approx(len(reasons) / len(rows))


def test_too_many_quarantined_clips_fail_the_gate(tmp_path):
    rows, reasons = _plant_bad_audio(tmp_path)
    path = build(tmp_path, rows, write_audio=False)
    result = run_manifest_gate(path, config(tmp_path, max_quarantine_share=0.1))
    assert not result.success
    assert failed_checks(result) == {("expect_column_values_to_be_in_set", "quarantine_reason")}
    entry = result.failed[0]
    assert entry["unexpected_count"] == len(reasons)
    assert all(x["quarantine_reason"] for x in entry["examples"])
    assert len(pd.read_csv(tmp_path / "gated" / "quarantine.csv")) == len(reasons)
    with pytest.raises(GateFailed, match="quarantine_reason"):
        raise_if_failed(result)


@pytest.mark.parametrize("seconds, reason", [
    (6.0, "too long: 6.00 s, above max_duration_s 5 s"),
    (0.1, "too short: 0.10 s, below min_duration_s 0.2 s"),
])
def test_one_clip_of_bad_duration_is_quarantined_and_the_gate_passes(tmp_path, seconds, reason):
    rows = good_rows()
    rows[0] = make_row(rows[0]["utt_id"], "spk1", ["sad", "sad"], seconds=seconds)
    result = run_manifest_gate(build(tmp_path, rows), config(tmp_path,
                                                             max_quarantine_share=0.1))
    assert result.success, result.failed
    assert result.n_quarantined == 1
    quarantine = pd.read_csv(tmp_path / "gated" / "quarantine.csv")
    assert quarantine.to_dict("records") == [
        {"utt_id": "spk1_0", "audio_path": "audio/spk1_0.wav", "reason": reason}]
    gated, _ = read_manifest(tmp_path / "gated" / "manifest.parquet")
    assert gated["utt_id"].tolist() == [r["utt_id"] for r in rows[1:]]


def test_many_clips_of_bad_duration_fail_the_gate_naming_the_bound(tmp_path):
    rows = good_rows()
    for i in range(4):
        rows[i] = make_row(rows[i]["utt_id"], "spk1", ["sad", "sad"], seconds=6.0)
    result = run_manifest_gate(build(tmp_path, rows), config(tmp_path,
                                                             max_quarantine_share=0.1))
    assert not result.success
    assert failed_checks(result) == {("expect_column_values_to_be_in_set", "quarantine_reason")}
    assert len(pd.read_csv(tmp_path / "gated" / "quarantine.csv")) == 4
    assert not (tmp_path / "gated" / "manifest.parquet").exists()
    with pytest.raises(GateFailed, match=r"max_quarantine_share = 10\.0%") as failure:
        raise_if_failed(result)
    assert "4 of 20 rows" in str(failure.value) and "too long" in str(failure.value)


def test_data_root_argument_overrides_the_metadata(tmp_path):
    rows = good_rows()
    path = build(tmp_path, rows)
    (tmp_path / "corpus").rename(tmp_path / "moved")
    missing = run_manifest_gate(path, config(tmp_path))
    assert missing.n_quarantined == len(rows) and not missing.success
    moved = run_manifest_gate(path, config(tmp_path), data_root=tmp_path / "moved")
    assert moved.success and moved.n_quarantined == 0


def test_bad_config_is_refused(tmp_path):
    path = build(tmp_path, good_rows()[:2])
    with pytest.raises(ValueError, match="max_quarantine_share"):
        run_manifest_gate(path, config(tmp_path, max_quarantine_share=1.5))
