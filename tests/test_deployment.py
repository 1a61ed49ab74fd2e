"""The deployment on a live local stack, as a user runs it: `make up` (Prefect server, worker,
MLflow server, `prefect deploy`), `prefect deployment run 'ser-pipeline/local' -p profile=smoke
--watch`, then `make down`, which must leave no process and no listener behind."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from tests.conftest import REPO
from tests.test_pipeline_smoke import copy_project, experiments, git_project

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


def test_make_up_deployment_run_make_down(tmp_path):
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
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "PREFECT_HOME": str(root / ".emoreason" / "stack" / "prefect"),
           "PREFECT_API_URL": f"http://127.0.0.1:{prefect_port}/api"}
    env.pop("MLFLOW_TRACKING_URI")  # the stack gives the worker its MLflow server
    git_project(root, env)

    up = run(["make", "up", f"PREFECT_PORT={prefect_port}", f"MLFLOW_PORT={mlflow_port}"],
             root, env, timeout=300)
    state = json.loads((root / ".emoreason" / "stack" / "pids.json").read_text())
    try:
        assert f"Prefect UI: http://127.0.0.1:{prefect_port}" in up
        assert f"MLflow UI:  http://127.0.0.1:{mlflow_port}" in up
        assert set(state["pids"]) == {"mlflow", "prefect-server", "worker"}
        watched = run(["prefect", "deployment", "run", "ser-pipeline/local", "-p",
                       "profile=smoke", "--watch", "--watch-timeout", "900"],
                      root, env, timeout=960)
        assert "Flow run finished successfully in 'Completed'" in " ".join(watched.split())
        client = mlflow.MlflowClient(tracking_uri=f"http://127.0.0.1:{mlflow_port}")
        versions = client.search_model_versions("name = 'emoreason'")
        assert [v.version for v in versions] == ["1"]
        assert "champion" in client.get_model_version("emoreason", "1").aliases
        assert len(experiments(root, env)) == 1  # the run, saved as a DVC experiment
    finally:
        down = run(["make", "down"], root, env, timeout=120)
    assert "stopped" in down
    assert not [name for name, pgid in state["pids"].items() if alive(pgid)]
    assert not [port for port in state["ports"].values() if port_open(port)]
    assert not (root / ".emoreason" / "stack" / "pids.json").exists()
