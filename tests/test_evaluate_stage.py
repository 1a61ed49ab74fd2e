"""The evaluate stage on a tiny pipeline: every system scored on the same test clips, the
outputs DVC and people read, and one MLflow run per system with the same metric names."""
import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from components.config import Params
from components.evaluate.stage import run_evaluate
from components.speechlm.zeroshot import build_zero_shot

pytestmark = pytest.mark.slow
SYSTEMS = {"majority", "egemaps_lr_global", "egemaps_lr_speaker", "encoder", "zeroshot", "sft"}


@pytest.fixture(scope="module")
def evaluated(pipeline, trained, tmp_path_factory):
    root, df, feats, _, labels, tiny = pipeline
    tmp = tmp_path_factory.mktemp("evaluate")
    params = Params()
    params.tracking.experiment = "test-evaluate-stage"  # this test's runs only
    params.zeroshot.features = str(root / "features" / "features.parquet")
    params.zeroshot.manifest = str(root / "manifest.parquet")
    params.zeroshot.levels = str(root / "features" / "levels.json")
    params.zeroshot.lm, params.zeroshot.eval_clips, params.zeroshot.max_new_tokens = \
        str(tiny), 2, 4
    build_zero_shot(params, tmp / "zeroshot")
    cfg = params.evaluate
    cfg.features, cfg.manifest = params.zeroshot.features, params.zeroshot.manifest
    cfg.models = {"zeroshot": str(tmp / "zeroshot"), "sft": str(trained),
                  "rl": str(tmp / "absent")}
    cfg.n_boot, cfg.max_new_tokens = 200, 12
    params.inference.self_correct_rounds = 2
    params.inference.instructions = {"recheck": params.inference.instructions["recheck"]}
    out = tmp / "reports"
    return run_evaluate(params, out), out, df, labels


def test_every_system_is_scored_on_the_same_test_clips(evaluated):
    systems, out, df, labels = evaluated
    test = df[df["split"] == "test"]
    assert set(systems) == SYSTEMS  # rl's folder does not exist: left out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["labels"] == labels and metrics["split"] == "test"
    for name, entry in metrics["systems"].items():
        assert entry["n"] == len(test) and entry["out_of_set"] == 0, name
        for key in ("wa", "ua", "macro_f1", "any_annotator_accuracy",
                    "annotator_aware_macro_f1"):
            lo, hi = entry["ci"][key]
            assert lo <= entry[key] <= hi, (name, key)
        predictions = pd.read_parquet(out / "predictions" / f"{name}.parquet")
        assert sorted(predictions["utt_id"]) == sorted(test["utt_id"])
    # the majority class recalls one class fully and the others not at all
    present = test[test["label"] != ""]["label"].nunique()
    assert metrics["systems"]["majority"]["ua"] == pytest.approx(1 / present)
    assert metrics["systems"]["majority"]["jsd"] is not None
    # models with rationales are scored on them; baselines without are not
    assert metrics["systems"]["sft"]["well_formed"] is not None
    assert "grounding" not in metrics["systems"]["egemaps_lr_speaker"]
    assert metrics["fitted"]["egemaps_lr_speaker"]["C"] in Params().evaluate.lr_c_grid
    # the temperature each model's probabilities were scaled by (none for the zero-shot LM)
    assert metrics["fitted"]["sft"]["label_temperature"] == json.loads(
        (Path(metrics["fitted"]["sft"]["folder"]) / "task.json").read_text())["label_temperature"]
    assert metrics["fitted"]["zeroshot"]["label_temperature"] is None
    pairs = {(p["a"], p["b"], p["metric"]) for p in metrics["pvalues"]}
    assert ("sft", "egemaps_lr_speaker", "ua") in pairs
    assert all(0 < p["p"] <= 1 for p in metrics["pvalues"])


def test_the_speechlm_reports_the_argmax_of_its_probabilities(evaluated):
    _, out, _, labels = evaluated
    for name in ("sft", "zeroshot", "encoder"):
        predictions = pd.read_parquet(out / "predictions" / f"{name}.parquet")
        for label, probs in zip(predictions["label"], predictions["probabilities"]):
            probs = json.loads(probs)
            assert set(probs) == set(labels) and sum(probs.values()) == pytest.approx(1.0)
            assert label == max(probs, key=probs.get)


def test_outputs_for_dvc_and_people(evaluated):
    _, out, df, _ = evaluated
    consensus = df[(df["split"] == "test") & (df["label"] != "")]
    rows = pd.read_csv(out / "plots" / "confusion_sft.csv")
    assert list(rows.columns) == ["actual", "predicted"] and len(rows) == len(consensus)
    html = (out / "report.html").read_text()
    assert "http://" not in html and "https://" not in html
    assert html.count("data:image/png;base64,") >= len(SYSTEMS)  # a confusion matrix each
    assert all(name in html for name in SYSTEMS)
    assert (out / "tables" / "slices_sft.csv").exists()


def test_one_mlflow_run_per_system_with_the_same_metric_names(evaluated):
    experiment = mlflow.get_experiment_by_name("test-evaluate-stage").experiment_id
    runs = mlflow.search_runs([experiment], output_format="list",
                              filter_string="tags.`emoreason.kind` = 'evaluation'")
    by_system = {r.data.tags["emoreason.system"]: r for r in runs}
    assert set(by_system) >= SYSTEMS
    for run in by_system.values():
        assert run.data.tags["stage"] == "evaluate"
        assert {"wa", "ua", "macro_f1", "annotator_aware_macro_f1"} <= set(run.data.metrics)
    parents = {r.data.tags.get("mlflow.parentRunId") for r in by_system.values()}
    assert len(parents) == 1 and None not in parents


def test_self_correction_rounds_are_scored_against_the_first_answer(evaluated):
    systems, out, df, _ = evaluated
    saved = json.loads((out / "self_correction.json").read_text())
    assert saved["rounds"] == 2 and list(saved["systems"]) == ["sft"]  # evaluate.refine_systems
    sft = saved["systems"]["sft"]
    assert set(sft) == {"-", "recheck", "control"}  # no wall time: `evaluate.run.json` has it
    assert json.loads((out.parent / "reports.run.json").read_text())[
        "self_correction_seconds"]["sft"] > 0
    # round 0 is the sft system's own first answer, scored as in metrics.json
    assert sft["-"]["round_0"]["ua"] == pytest.approx(systems["sft"]["ua"])
    n_consensus = int(((df["split"] == "test") & (df["label"] != "")).sum())
    for name in ("recheck", "control"):
        assert set(sft[name]) == {"round_1", "round_2"}
        for cell in sft[name].values():
            kept = sum(cell[k] for k in ("wrong_to_right", "right_to_wrong", "right_kept",
                                         "wrong_kept", "wrong_changed"))
            assert kept == n_consensus  # every consensus clip is in one cell of the flip table
            lo, hi = cell["ci"]["ua"]
            assert lo <= cell["ua"] <= hi
    rounds = pd.read_parquet(out / "predictions" / "self_correction_sft.parquet")
    assert len(rounds) == 2 * 2 * len(df[df["split"] == "test"])  # 2 follow-ups x 2 rounds
    assert set(rounds["round"]) == {1, 2} and rounds["output"].str.len().gt(0).all()
    table = pd.read_csv(out / "tables" / "self_correction_sft.csv")
    assert list(table["round"]) == [0, 1, 2, 1, 2]
    html = (out / "report.html").read_text()
    assert "Self-correction rounds" in html and "self-correction: sft" in html
    # the per-round figures are metric histories of the evaluate run: step = round
    client = mlflow.tracking.MlflowClient()
    experiment = mlflow.get_experiment_by_name("test-evaluate-stage").experiment_id
    run = mlflow.search_runs([experiment], output_format="list",
                             filter_string="tags.`emoreason.kind` = 'stage' and "
                                           "tags.stage = 'evaluate'")[0]
    history = client.get_metric_history(run.info.run_id, "self_correction/sft/control/ua")
    assert sorted(m.step for m in history) == [0, 1, 2]
