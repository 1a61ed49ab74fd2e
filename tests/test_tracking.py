"""MLflow: stages of one configuration share a parent run; the flow's parent id wins."""
import subprocess

import mlflow

from components.config import TrackingConfig
from components.tracking import PARENT_ENV, git_commit, stage_run, start_pipeline_run


def _children(parent_id):
    return mlflow.search_runs(search_all_experiments=True, output_format="list",
                              filter_string=f"tags.mlflow.parentRunId = '{parent_id}'")


def test_stages_without_a_flow_share_one_parent_per_configuration(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no git repo, no params.yaml: a stable key
    cfg = TrackingConfig(experiment="test-tracking-key")
    with stage_run("prepare", cfg, {"a": {"b": 1}}) as first:
        mlflow.log_metric("rows", 3)
    with stage_run("manifest_gate", cfg) as second:
        pass
    run1 = mlflow.get_run(first.info.run_id)
    run2 = mlflow.get_run(second.info.run_id)
    parent = run1.data.tags["mlflow.parentRunId"]
    assert parent == run2.data.tags["mlflow.parentRunId"]
    assert run1.data.params == {"prepare.a.b": "1"}
    assert run1.data.metrics["rows"] == 3
    assert run1.data.tags["emoreason.stage"] == "prepare"
    assert mlflow.get_run(parent).data.tags["emoreason.kind"] == "pipeline"
    (tmp_path / "params.yaml").write_text("base: {seed: 2}\n")  # a new configuration
    with stage_run("prepare", cfg) as third:
        pass
    assert mlflow.get_run(third.info.run_id).data.tags["mlflow.parentRunId"] != parent


def test_parent_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    cfg = TrackingConfig(experiment="test-tracking-env")
    parent = start_pipeline_run(cfg, "k" * 16)
    monkeypatch.setenv(PARENT_ENV, parent)
    with stage_run("prepare", cfg):
        pass
    assert [r.data.tags["emoreason.stage"] for r in _children(parent)] == ["prepare"]


def test_dvc_rewriting_its_lock_keeps_one_parent(monkeypatch, tmp_path):
    """`dvc repro` rewrites dvc.lock after each stage; its stages must not split over parents."""
    monkeypatch.chdir(tmp_path)
    for name in ("dvc.yaml", "dvc.lock", "params.yaml"):
        (tmp_path / name).write_text("stages: {}\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run(["git", "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "init"], check=True)
    cfg = TrackingConfig(experiment="test-tracking-lock")
    with stage_run("prepare", cfg) as first:
        pass
    (tmp_path / "dvc.lock").write_text("stages: {prepare: {}}\n")
    assert not git_commit().endswith("-dirty")
    with stage_run("manifest_gate", cfg) as second:
        pass
    parents = {mlflow.get_run(r.info.run_id).data.tags["mlflow.parentRunId"]
               for r in (first, second)}
    assert len(parents) == 1
    (tmp_path / "dvc.yaml").write_text("stages: {x: {cmd: 'true'}}\n")
    assert git_commit().endswith("-dirty")  # any other tracked change still counts


def test_the_last_stage_ends_the_parent_and_runs_are_tagged_for_the_ui(monkeypatch, tmp_path):
    """A plain `dvc repro` has no flow to end its parent: the graph's last stage does, a new
    pipeline run ends a parent left open, and the experiment opens on training runs."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dvc.yaml").write_text("stages: {prepare: {cmd: a}, register: {cmd: b}}\n")
    cfg = TrackingConfig(experiment="test-tracking-end")
    with stage_run("prepare", cfg) as first:
        pass
    parent = mlflow.get_run(first.info.run_id).data.tags["mlflow.parentRunId"]
    assert mlflow.get_run(first.info.run_id).data.tags["stage"] == "prepare"
    assert mlflow.get_run(parent).info.status == "RUNNING"  # more stages to come
    with stage_run("register", cfg):
        pass
    assert mlflow.get_run(parent).info.status == "FINISHED"
    experiment = mlflow.get_experiment_by_name("test-tracking-end")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"

    stopped = start_pipeline_run(cfg, "s" * 16)  # a run that died before its last stage
    flow = start_pipeline_run(cfg, "f" * 16, orchestrator="prefect")
    start_pipeline_run(cfg, "n" * 16)
    assert mlflow.get_run(stopped).info.status == "KILLED"
    assert mlflow.get_run(flow).info.status == "RUNNING"  # a flow ends its own parent
