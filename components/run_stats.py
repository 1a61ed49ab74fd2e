"""What differs between two runs of a stage on the same inputs (wall-clock time, cache hits,
endpoint latency), kept beside the stage's output folder rather than in it.

An output holding such numbers gets a new hash on every re-run, so DVC would re-run every stage
after it (from a shared DVC cache too). A stage writes them to `<out>.run.json` instead: a DVC
metrics file that no stage depends on (`dvc metrics show`, `dvc metrics diff`).
"""
from __future__ import annotations

import json
from pathlib import Path

SUFFIX = ".run.json"


def run_stats_path(out: Path | str) -> Path:
    """`data/features` -> `data/features.run.json`."""
    out = Path(out)
    return out.with_name(out.name + SUFFIX)


def write_run_stats(out: Path | str, stats: dict) -> Path:
    """Write the run's figures for output folder `out`, replacing those of an earlier run."""
    path = run_stats_path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(stats, indent=2, sort_keys=True, allow_nan=False) + "\n")
    return path


def read_run_stats(out: Path | str) -> dict:
    """The figures written for `out`; {} when there are none."""
    path = run_stats_path(out)
    return json.loads(path.read_text()) if path.is_file() else {}
