"""The whole pipeline on the smoke profile through the Prefect flow, under Prefect's test harness.

It proves the stages fit together: the flow runs every dvc.yaml stage in order with the profile
applied, gates publish their results as Prefect artifacts, MLflow gets one parent with a child
per stage, the run is saved as a DVC experiment, a changed param re-runs only the stages that
read it, and a failing gate stops the flow at once (no retry).
"""
import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow

BIN = str(Path(sys.executable).parent)


def git_project(root: Path, env: dict) -> None:
    """Make `root` a git repository with one commit and a DVC project in it (experiments are
    git commits)."""
    for cmd in (["git", "init", "-q"], ["git", "config", "user.name", "smoke"],
                ["git", "config", "user.email", "smoke@example.invalid"],
                ["dvc", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "smoke"]):
        subprocess.run(cmd, cwd=root, env=env, check=True)


def copy_project(root: Path) -> None:
    """What the pipeline needs to run: the graph, params, profiles and the components."""
    for name in ("dvc.yaml", "params.yaml", ".gitignore"):
        shutil.copy(REPO / name, root / name)
    for name in ("components", "profiles"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A copy of the project as its own git + DVC project."""
    root = tmp_path_factory.mktemp("project")
    copy_project(root)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    git_project(root, env)
    return root, env


@pytest.fixture(scope="module")
def harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def flow_run_records(flow_run_id):
    """The artifacts (key -> markdown) and task runs (name -> task run) of one flow run."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        FlowRunFilter,
        FlowRunFilterId,
    )

    async def read():
        async with get_client() as client:
            artifacts = await client.read_artifacts(artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
            tasks = await client.read_task_runs(flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[flow_run_id])))
            return artifacts, tasks

    artifacts, tasks = asyncio.run(read())
    return {a.key: a.data for a in artifacts}, {t.name: t for t in tasks}


def experiments(root: Path, env: dict) -> dict:
    """`dvc exp show`: experiment name -> its params.yaml values and metrics files."""
    shown = json.loads(subprocess.run(["dvc", "exp", "show", "--json"], cwd=root, env=env,
                                      capture_output=True, text=True, check=True).stdout)
    found = {}
    for entry in shown:
        for exp in entry.get("experiments") or []:
            for rev in exp.get("revs", []):
                data = rev.get("data") or {}
                found[rev.get("name")] = {**data["params"]["params.yaml"]["data"],
                                          "metrics": data.get("metrics") or {}}
    return found


def test_flow_runs_every_stage_as_an_experiment_then_only_what_changed(project, harness,
                                                                      monkeypatch):
    from flows.ser_pipeline import pipeline_stages, ser_pipeline

    root, env = project
    monkeypatch.setenv("PATH", env["PATH"])
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    stages = pipeline_stages(root)
    assert stages[:2] == ["prepare", "manifest_gate"]
    original = (root / "params.yaml").read_text()

    state = ser_pipeline(profile="smoke", project_dir=str(root), experiment="smoke-1",
                         return_state=True)
    summary = state.result()
    assert summary == {"experiment": "smoke-1", "profile": "smoke", "set_params": {},
                       "ran": stages, "skipped": []}
    assert (root / "params.yaml").read_text() == original  # restored after the run

    assert (root / "models" / "sft" / "task.json").exists()
    assert json.loads((root / "models" / "zeroshot" / "task.json").read_text())["inputs"] == "text"
    manifest = pd.read_parquet(root / "data" / "prepared" / "manifest.parquet")
    gated = pd.read_parquet(root / "data" / "gated" / "manifest.parquet")
    assert len(manifest) == 24 and len(gated) == 24  # the smoke profile's corpus size

    published, _ = flow_run_records(state.state_details.flow_run_id)
    assert "passed" in published["manifest-gate"]
    assert {"features-gate", "rationales-gate"} <= set(published)
    assert "register" not in published  # not a gate: its result is in the MLflow artifact
    assert published["evaluation"].count("\n| ") >= 5  # header + one row per system
    assert "| sft | " in published["evaluation"]
    assert "registered model: emoreason v1 (promoted" in published["mlflow"]
    assert "ran: prepare, manifest_gate" in published["dvc-experiment"]

    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    parents = [r for r in runs if r.data.tags.get("emoreason.kind") == "pipeline"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert parents[0].data.tags["emoreason.dvc_experiment"] == "smoke-1"
    assert parents[0].info.run_id in published["mlflow"]
    children = {r.data.tags["emoreason.stage"] for r in runs
                if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id}
    assert children == set(stages)

    metrics = json.loads((root / "reports" / "evaluate" / "metrics.json").read_text())
    assert {"majority", "egemaps_lr_speaker", "encoder", "zeroshot", "sft"} <= \
        set(metrics["systems"])
    corrected = json.loads((root / "reports" / "evaluate" / "self_correction.json").read_text())
    assert corrected["rounds"] == 1  # the smoke profile's one refinement round
    assert set(corrected["systems"]["sft"]) == {"-", "recheck", "evidence", "control"}
    probe = json.loads((root / "reports" / "probe" / "probe.json").read_text())
    assert probe["n_clips"] == 4 and set(probe["instructions"]) == {
        "recheck", "evidence", "calmer", "angrier"}
    registered = mlflow.MlflowClient().get_model_version_by_alias("emoreason", "champion")
    assert registered.tags["emoreason.decision"] == "promoted"  # the first version

    exps = experiments(root, env)
    assert exps["smoke-1"]["sft"]["lm"] == "bundled:tiny-random-llama"
    assert exps["smoke-1"]["prepare"]["demo"]["n_clips"] == 24
    assert "sft" in exps["smoke-1"]["metrics"]["reports/evaluate/metrics.json"]["data"]["systems"]

    # one param that only the register stage reads: only register runs again
    again = ser_pipeline(profile="smoke", set_params={"register.grounding_tolerance": 0.1},
                         project_dir=str(root), experiment="smoke-2")
    assert again["ran"] == ["register"]
    assert again["skipped"] == [s for s in stages if s != "register"]
    exps = experiments(root, env)
    assert exps["smoke-2"]["register"]["grounding_tolerance"] == 0.1
    assert exps["smoke-1"]["register"]["grounding_tolerance"] == 0.05
    assert len(mlflow.MlflowClient().search_model_versions("name = 'emoreason'")) == 2


def test_a_failing_gate_stops_the_flow_at_once(project, harness, monkeypatch):
    from flows.ser_pipeline import ser_pipeline

    root, env = project
    monkeypatch.setenv("PATH", env["PATH"])
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    before = set(experiments(root, env))
    state = ser_pipeline(profile="smoke", project_dir=str(root), experiment="too-short",
                         set_params={"manifest_gate.max_duration_s": 0.5},  # every clip is longer
                         stages=["prepare", "manifest_gate", "features"], return_state=True)
    assert state.is_failed()
    with pytest.raises(RuntimeError, match="stage manifest_gate failed"):
        state.result()
    published, tasks = flow_run_records(state.state_details.flow_run_id)
    assert "FAILED" in published["manifest-gate"] and "duration_s" in published["manifest-gate"]
    gate = tasks["manifest_gate"]
    assert gate.state.is_failed() and gate.run_count == 1  # a failed gate is not retried
    assert "features" not in tasks
    assert set(experiments(root, env)) == before  # a failed run is no experiment
    assert "max_duration_s: 30.0" in (root / "params.yaml").read_text()


def test_a_typo_in_an_override_fails_before_anything_runs(project, harness):
    from components.config import ConfigError
    from flows.ser_pipeline import ser_pipeline

    root, _ = project
    with pytest.raises(ConfigError, match="unknown key sft.max_stepz"):
        ser_pipeline(profile="smoke", set_params={"sft.max_stepz": 3}, project_dir=str(root))
    with pytest.raises(ValueError, match="unknown profile 'smok'.*'smoke'"):
        ser_pipeline(profile="smok", project_dir=str(root))
    assert "max_steps: -1" in (root / "params.yaml").read_text()
