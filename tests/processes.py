"""Running the `emoreason` command in a subprocess, and killing it part-way (SIGKILL of its
whole process group), as a crash or an impatient user would."""
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def cli(params: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "components.cli", "--params", str(params), *args]


def kill_when(cmd: list[str], ready: Callable[[], bool], timeout_s: float = 180) -> None:
    """Run `cmd` in its own process group and SIGKILL the group as soon as `ready()`."""
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + timeout_s
    try:
        while not ready():
            assert proc.poll() is None, "the run ended before the kill"
            assert time.monotonic() < deadline, "the kill condition never came"
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def run(cmd: list[str]) -> str:
    """stdout of `cmd`, which must succeed without a traceback of its own (lines that Ray
    forwards from its actors carry their process's tag, e.g. Ray Train's controller warning
    that a resource request timed out on a busy machine, and do not count)."""
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    own = [line for line in done.stderr.splitlines() if line.lstrip().startswith("Traceback")]
    assert not own, done.stderr[-3000:]
    return done.stdout


