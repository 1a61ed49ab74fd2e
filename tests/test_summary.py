"""`emoreason summary` and the stage-time log it reads: what `make demo` ends with."""
import json

import yaml

from components.cli import main
from components.stage_times import latest, record, stage_of


def test_stage_of_names_dvc_stages_only():
    assert stage_of("gate", "features") == "features_gate"
    assert stage_of("sft") == "sft"
    assert stage_of("predict") is None and stage_of("summary") is None


def test_latest_keeps_the_last_run_per_stage_in_pipeline_order(tmp_path):
    log = tmp_path / "times.jsonl"
    record("sft", 600.0, 0, log)
    record("prepare", 12.5, 0, log)
    with log.open("a") as f:
        f.write('{"stage": "sft", "secon\n')  # a run killed while writing
    record("sft", 300.0, 1, log)
    runs = latest(log)
    assert list(runs) == ["prepare", "sft"]
    assert runs["sft"]["seconds"] == 300.0 and runs["sft"]["status"] == 1
    assert latest(tmp_path / "none.jsonl") == {}


def test_a_stage_command_records_its_time_and_status(tmp_path, monkeypatch):
    log = tmp_path / "times.jsonl"
    monkeypatch.setenv("EMOREASON_STAGE_TIMES", str(log))
    params = tmp_path / "params.yaml"
    params.write_text("{}\n")
    assert main(["--params", str(params), "prepare", "--corpus", "ravdess",
                 "--data-dir", str(tmp_path / "nope")]) == 1
    assert main(["--params", str(params), "gate", "manifest",
                 "--manifest", str(tmp_path / "missing.parquet")]) == 1
    runs = latest(log)
    assert list(runs) == ["prepare", "manifest_gate"]
    assert all(r["status"] == 1 and r["seconds"] >= 0 for r in runs.values())


def test_summary_prints_table_registry_and_times(tmp_path, monkeypatch, capsys):
    log = tmp_path / "times.jsonl"
    monkeypatch.setenv("EMOREASON_STAGE_TIMES", str(log))
    record("prepare", 30.0, 0, log)
    record("sft", 900.0, 0, log)
    evaluate, register = tmp_path / "eval", tmp_path / "reg"
    evaluate.mkdir()
    register.mkdir()
    ci = {"ua": [0.3, 0.5], "wa": [0.35, 0.55]}
    (evaluate / "metrics.json").write_text(json.dumps({"systems": {
        "sft": {"wa": 0.45, "ua": 0.4, "macro_f1": 0.38, "any_annotator_accuracy": 0.6,
                "annotator_aware_macro_f1": 0.5, "ci": ci}}}))
    (register / "result.json").write_text(json.dumps({
        "model_name": "emoreason", "version": "3", "aliases": ["challenger", "champion"],
        "decision": "promoted", "reason": "first model"}))
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"evaluate": {"out": str(evaluate)},
                                      "register": {"out": str(register)},
                                      "tracking": {"tracking_uri": "sqlite:///x.db"}}))
    assert main(["--params", str(params), "summary"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("sft "))
    assert "0.400 [0.300,0.500]" in row and "0.450 [0.350,0.550]" in row
    assert "emoreason v3 promoted (aliases: challenger, champion): first model" in out
    times = {line.split()[0]: line.split()[1] for line in out.splitlines()
             if line.split() and line.split()[0] in ("prepare", "sft", "total")}
    assert times == {"prepare": "0.5", "sft": "15.0", "total": "15.5"}
    assert "report.html" in out and "--backend-store-uri sqlite:///x.db" in out
    assert "summary" not in latest(log)  # not a stage


def test_summary_of_a_run_that_stopped_early(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EMOREASON_STAGE_TIMES", str(tmp_path / "times.jsonl"))
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"evaluate": {"out": str(tmp_path / "e")},
                                      "register": {"out": str(tmp_path / "r")}}))
    assert main(["--params", str(params), "summary"]) == 0
    out = capsys.readouterr().out
    assert "No evaluation yet" in out and "Nothing registered yet" in out
