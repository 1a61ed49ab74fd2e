"""The pipeline flow's failures under Prefect's test harness: a failing gate stops the flow at
once (no retry, no experiment saved), a typo in an override or a profile fails before anything
runs. The whole pipeline's smoke run, through the deployment on a live stack, is in
tests/test_deployment.py; the helpers here are shared with it.
"""
import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

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
