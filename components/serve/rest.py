"""Start and stop `mlflow models serve` on this machine: for the REST test and the serving
benchmark, which must both find a free port, wait for the server and stop exactly it."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_model_server(model_uri: str, env: dict, log: Path, workers: int = 1,
                       request_timeout_s: int = 300, wait_s: float = 300,
                       cwd: Path | None = None) -> tuple[subprocess.Popen, int]:
    """`mlflow models serve` on 127.0.0.1 and a free port, in its own process group (so
    `stop_model_server` ends its workers too), once `/ping` answers. MLflow starts uvicorn
    from PATH, so this interpreter's scripts come first there."""
    port = free_port()
    env = {**env, "PATH": os.pathsep.join([os.path.dirname(sys.executable),
                                           env.get("PATH", "")])}
    with open(log, "w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "-h",
             "127.0.0.1", "-p", str(port), "--env-manager", "local",
             "-t", str(request_timeout_s), "-w", str(workers)],
            cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"mlflow models serve exited with {server.returncode}; see {log}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=5):
                return server, port
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(1)
    stop_model_server(server)
    raise RuntimeError(f"mlflow models serve did not answer within {wait_s:.0f} s; see {log}")


def stop_model_server(server: subprocess.Popen) -> None:
    """End the server and the workers it started (its process group): TERM, then KILL."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(server.pid, sig)
        except ProcessLookupError:
            return
        try:
            server.wait(timeout=30)
            return
        except subprocess.TimeoutExpired:
            continue
