"""The local stack on 127.0.0.1 for the deployments of prefect.yaml (`make up`, `make down`).

`up` starts a Prefect server, the work pools, a process worker for `emoreason-local` and an
MLflow tracking server (the project's SQLite store `mlflow.db`, artifacts in `mlartifacts/`),
waits until each answers, deploys prefect.yaml and says where the UIs are. Each service runs in
its own process group, whose id goes to `.emoreason/stack/pids.json` with the ports; `down`
stops exactly those groups (SIGTERM, then SIGKILL after a grace period) and checks that nothing
answers on the ports any more.
The Prefect server keeps its database under `.emoreason/stack/prefect` (PREFECT_HOME), apart
from any other Prefect the user runs.

    python -m flows.stack up [--prefect-port 4200] [--mlflow-port 5000]
    python -m flows.stack down
"""
import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

STATE = Path(".emoreason/stack")
POOL, CLUSTER_POOL = "emoreason-local", "emoreason-cluster"
HOST = "127.0.0.1"


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((HOST, port)) == 0


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a process of another user took the id: not ours any more
        return False
    return True


def record(pids: dict, ports: dict) -> None:
    (STATE / "pids.json").write_text(json.dumps({"pids": pids, "ports": ports}, indent=2) + "\n")


def start(name: str, cmd: list[str], env: dict, pids: dict, ports: dict) -> None:
    """Start `cmd` in a new process group (session), logging to `<name>.log`; record its id
    at once, so `down` can stop it even if `up` fails later."""
    with open(STATE / f"{name}.log", "ab") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    pids[name] = proc.pid
    record(pids, ports)


def wait_for(name: str, ready, pids: dict, timeout_s: float = 180) -> None:
    """Poll `ready()` until it is true; fail with the service's log tail if it died or hung."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if ready():
                return
        except httpx.HTTPError:
            pass
        if not group_alive(pids[name]):
            break
        time.sleep(1)
    tail = (STATE / f"{name}.log").read_text(errors="replace")[-3000:]
    raise RuntimeError(f"{name} did not come up (see {STATE / name}.log):\n{tail}")


def prefect(args: list[str], env: dict) -> None:
    subprocess.run([sys.executable, "-m", "prefect", "--no-prompt", *args], env=env,
                   check=True, stdout=subprocess.DEVNULL)


def worker_online(api: str) -> bool:
    response = httpx.post(f"{api}/work_pools/{POOL}/workers/filter", json={}, timeout=5)
    return response.status_code == 200 and any(
        w.get("status") == "ONLINE" for w in response.json())


def up(prefect_port: int, mlflow_port: int) -> None:
    STATE.mkdir(parents=True, exist_ok=True)
    pids_file = STATE / "pids.json"
    if pids_file.exists() and any(map(group_alive,
                                      json.loads(pids_file.read_text())["pids"].values())):
        sys.exit(f"the stack is already up ({pids_file}); `make down` first")
    for port, var in ((prefect_port, "PREFECT_PORT"), (mlflow_port, "MLFLOW_PORT")):
        if port_open(port):
            sys.exit(f"port {port} is in use; choose another: make up {var}=<port>")
    api = f"http://{HOST}:{prefect_port}/api"
    mlflow_uri = f"http://{HOST}:{mlflow_port}"
    env = {**os.environ, "PREFECT_HOME": str((STATE / "prefect").resolve()),
           "PREFECT_API_URL": api, "MLFLOW_TRACKING_URI": mlflow_uri,
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
    env.pop("PREFECT_PROFILE", None)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    pids: dict[str, int] = {}
    ports = {"prefect": prefect_port, "mlflow": mlflow_port}
    try:
        start("mlflow", [sys.executable, "-m", "mlflow", "server", "--host", HOST,
                         "--port", str(mlflow_port), "--workers", "1",
                         "--backend-store-uri", "sqlite:///mlflow.db",
                         "--artifacts-destination", "mlartifacts"], env, pids, ports)
        start("prefect-server", [sys.executable, "-m", "prefect", "server", "start", "--host",
                                 HOST, "--port", str(prefect_port)], env, pids, ports)
        wait_for("prefect-server",
                 lambda: httpx.get(f"{api}/health", timeout=5).status_code == 200, pids)
        for pool in (POOL, CLUSTER_POOL):
            prefect(["work-pool", "create", pool, "--type", "process", "--overwrite"], env)
            # a flow run writes params.yaml and the workspace: one run at a time per checkout
            prefect(["work-pool", "set-concurrency-limit", pool, "1"], env)
        start("worker", [sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL,
                         "--type", "process"], env, pids, ports)
        wait_for("mlflow", lambda: httpx.get(f"{mlflow_uri}/health", timeout=5).text == "OK",
                 pids)
        wait_for("worker", lambda: worker_online(api), pids)
        prefect(["deploy", "--all"], env)
    except BaseException:
        down()
        raise
    (STATE / "env").write_text(f"export PREFECT_API_URL={api}\n"
                               f"export MLFLOW_TRACKING_URI={mlflow_uri}\n")
    print(f"Prefect UI: http://{HOST}:{prefect_port}   (API {api})\n"
          f"MLflow UI:  {mlflow_uri}\n"
          f"Worker on pool {POOL}; deployments ser-pipeline/local and ser-pipeline/cluster.\n"
          f"Logs and process ids: {STATE}/. In your shell: . {STATE}/env, then\n"
          "  prefect deployment run 'ser-pipeline/local' -p profile=smoke --watch\n"
          "Stop everything: make down")


def down(grace_s: float = 20) -> None:
    """Stop the recorded process groups (worker first); fail if one survives or a port of
    the stack still answers."""
    pids_file = STATE / "pids.json"
    if not pids_file.exists():
        print("the stack is not up")
        return
    state = json.loads(pids_file.read_text())
    pids, ports = state["pids"], state["ports"]
    for name in ("worker", "prefect-server", "mlflow"):
        pgid = pids.get(name)
        if pgid is None or not group_alive(pgid):
            continue
        os.killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if group_alive(pgid):
            os.killpg(pgid, signal.SIGKILL)
            time.sleep(0.5)
    alive = [name for name, pgid in pids.items() if group_alive(pgid)]
    if alive:
        sys.exit(f"still running: {alive} ({pids_file})")
    deadline = time.monotonic() + grace_s
    while any(map(port_open, ports.values())) and time.monotonic() < deadline:
        time.sleep(0.2)
    answering = [port for port in ports.values() if port_open(port)]
    if answering:
        sys.exit(f"the stack's processes are gone but ports {answering} still answer")
    pids_file.unlink()
    (STATE / "env").unlink(missing_ok=True)
    print(f"stopped {', '.join(pids)}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m flows.stack", description=__doc__.split(
        "\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    start_parser = sub.add_parser("up", help="start the stack and deploy prefect.yaml")
    start_parser.add_argument("--prefect-port", type=int, default=4200)
    start_parser.add_argument("--mlflow-port", type=int, default=5000)
    sub.add_parser("down", help="stop the processes `up` started")
    args = parser.parse_args()
    if args.command == "up":
        up(args.prefect_port, args.mlflow_port)
    else:
        down()


if __name__ == "__main__":
    main()
