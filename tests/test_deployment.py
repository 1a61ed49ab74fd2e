"""The deployment on a live local stack, as a user runs it: `make up` (Prefect server, worker,
MLflow server, `prefect deploy`), `prefect deployment run 'ser-pipeline/local' -p profile=smoke
--watch`, then `make down`, which must leave no process and no listener behind. Its flow run is
the suite's one smoke run of the whole pipeline (what the run must leave is checked here);
tests/test_pipeline_smoke.py checks the flow's failures under Prefect's test harness."""
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from tests.conftest import REPO
from tests.test_pipeline_smoke import copy_project, experiments, flow_run_records, git_project

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def run(cmd: list[str], cwd: Path, env: dict, timeout: int) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, f"{' '.join(cmd)}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def deployment_run(root: Path, env: dict, *params: str) -> str:
    """`prefect deployment run 'ser-pipeline/local' -p ... --watch`: the flow run's id, once it
    finished successfully."""
    args = [a for p in params for a in ("-p", p)]
    watched = run(["prefect", "deployment", "run", "ser-pipeline/local", *args, "--watch",
                   "--watch-timeout", "900"], root, env, timeout=960)
    assert "Flow run finished successfully in 'Completed'" in " ".join(watched.split())
    return re.search(r"UUID: ([0-9a-f-]{36})", watched).group(1)


def test_make_up_deployment_run_make_down(tmp_path):
    """The one smoke run of the whole pipeline, through the deployment on the live stack: every
    dvc.yaml stage runs in order with the profile applied, gates publish their results as
    Prefect artifacts, the MLflow server gets one parent with a child per stage and the
    registered model, the run is saved as a DVC experiment, and a second run with a changed
    param re-runs only the stages that read it."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.ser_pipeline import pipeline_stages

    root = tmp_path / "project"
    root.mkdir()
    copy_project(root)
    for name in ("Makefile", "prefect.yaml"):
        (root / name).write_bytes((REPO / name).read_bytes())
    (root / "flows").mkdir()
    for path in (REPO / "flows").glob("*.py"):
        (root / "flows" / path.name).write_bytes(path.read_bytes())
    (root / ".venv").symlink_to(Path(sys.prefix))
    bin_dir = str(Path(sys.executable).parent)
    prefect_port, mlflow_port = free_port(), free_port()
    api = f"http://127.0.0.1:{prefect_port}/api"
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "PREFECT_HOME": str(root / ".emoreason" / "stack" / "prefect"),
           "PREFECT_API_URL": api}
    env.pop("MLFLOW_TRACKING_URI")  # the stack gives the worker its MLflow server
    git_project(root, env)
    stages = pipeline_stages(root)
    assert stages[:2] == ["prepare", "manifest_gate"]
    original = (root / "params.yaml").read_text()

    up = run(["make", "up", f"PREFECT_PORT={prefect_port}", f"MLFLOW_PORT={mlflow_port}"],
             root, env, timeout=300)
    state = json.loads((root / ".emoreason" / "stack" / "pids.json").read_text())
    try:
        assert f"Prefect UI: http://127.0.0.1:{prefect_port}" in up
        assert f"MLflow UI:  http://127.0.0.1:{mlflow_port}" in up
        assert set(state["pids"]) == {"mlflow", "prefect-server", "worker"}
        first = deployment_run(root, env, "profile=smoke", "experiment=smoke-1")
        assert (root / "params.yaml").read_text() == original  # restored after the run
        assert (root / "models" / "sft" / "task.json").exists()
        zeroshot = json.loads((root / "models" / "zeroshot" / "task.json").read_text())
        assert zeroshot["inputs"] == "text"
        manifest = pd.read_parquet(root / "data" / "prepared" / "manifest.parquet")
        gated = pd.read_parquet(root / "data" / "gated" / "manifest.parquet")
        assert len(manifest) == 24 and len(gated) == 24  # the smoke profile's corpus size

        with temporary_settings({PREFECT_API_URL: api}):
            published, _ = flow_run_records(first)
        assert "passed" in published["manifest-gate"]
        assert {"features-gate", "rationales-gate"} <= set(published)
        assert "register" not in published  # not a gate: its result is in the MLflow artifact
        assert published["evaluation"].count("\n| ") >= 5  # header + one row per system
        assert "| sft | " in published["evaluation"]
        assert "emoreason v1 (promoted" in published["mlflow"]  # a link to the version
        assert f"ran: {', '.join(stages)}" in published["dvc-experiment"]

        client = mlflow.MlflowClient(tracking_uri=f"http://127.0.0.1:{mlflow_port}")
        runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
        parents = [r for r in runs if r.data.tags.get("emoreason.kind") == "pipeline"]
        assert len(parents) == 1 and parents[0].info.status == "FINISHED"
        assert parents[0].data.tags["emoreason.dvc_experiment"] == "smoke-1"
        assert parents[0].info.run_id in published["mlflow"]
        children = {r.data.tags["emoreason.stage"] for r in runs
                    if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id}
        assert children == set(stages)
        champion = client.get_model_version_by_alias("emoreason", "champion")
        assert champion.version == "1" and champion.tags["emoreason.decision"] == "promoted"

        metrics = json.loads((root / "reports" / "evaluate" / "metrics.json").read_text())
        assert {"majority", "egemaps_lr_speaker", "encoder", "zeroshot", "sft"} <= \
            set(metrics["systems"])
        corrected = json.loads((root / "reports" / "evaluate" / "self_correction.json")
                               .read_text())
        assert corrected["rounds"] == 1  # the smoke profile's one refinement round
        assert set(corrected["systems"]["sft"]) == {"-", "recheck", "evidence", "control"}
        probe = json.loads((root / "reports" / "probe" / "probe.json").read_text())
        assert probe["n_clips"] == 4 and set(probe["instructions"]) == {
            "recheck", "evidence", "calmer", "angrier"}

        exps = experiments(root, env)
        assert set(exps) == {"smoke-1"}  # the run, saved as a DVC experiment
        assert exps["smoke-1"]["sft"]["lm"] == "bundled:tiny-random-llama"
        assert exps["smoke-1"]["prepare"]["demo"]["n_clips"] == 24
        assert "sft" in exps["smoke-1"]["metrics"]["reports/evaluate/metrics.json"]["data"][
            "systems"]

        # one param that only the register stage reads: only register runs again
        second = deployment_run(root, env, "profile=smoke", "experiment=smoke-2",
                                'set_params={"register.grounding_tolerance": 0.1}')
        with temporary_settings({PREFECT_API_URL: api}):
            published, _ = flow_run_records(second)
        assert '`{"register.grounding_tolerance": 0.1}`' in published["dvc-experiment"]
        assert "ran: register\n" in published["dvc-experiment"]
        assert f"up to date: {', '.join(s for s in stages if s != 'register')}" in \
            published["dvc-experiment"]
        exps = experiments(root, env)
        assert exps["smoke-2"]["register"]["grounding_tolerance"] == 0.1
        assert exps["smoke-1"]["register"]["grounding_tolerance"] == 0.05
        assert len(client.search_model_versions("name = 'emoreason'")) == 2
    finally:
        down = run(["make", "down"], root, env, timeout=120)
    assert "stopped" in down
    assert not [name for name, pgid in state["pids"].items() if alive(pgid)]
    assert not [port for port in state["ports"].values() if port_open(port)]
    assert not (root / ".emoreason" / "stack" / "pids.json").exists()
