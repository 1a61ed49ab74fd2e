"""Wall-clock time of every pipeline stage's command, for the run summary (`emoreason summary`).

DVC records no durations, and a stage's outputs must not hold them (see `components.run_stats`),
so each stage command appends one line to a log under `.emoreason/`, outside every DVC output:
the stage, its seconds, its exit status and when it ended. The summary reads the last line per
stage.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

LOG_ENV = "EMOREASON_STAGE_TIMES"
DEFAULT_LOG = Path(".emoreason") / "stage_times.jsonl"


def log_path() -> Path:
    """$EMOREASON_STAGE_TIMES, else `.emoreason/stage_times.jsonl` in the working directory
    (the project, under `dvc repro`)."""
    return Path(os.environ.get(LOG_ENV) or DEFAULT_LOG)


STAGES = {"prepare": "prepare", "gate manifest": "manifest_gate", "features": "features",
          "gate features": "features_gate", "distill": "distill",
          "gate rationales": "rationales_gate", "sft": "sft", "rl": "rl",
          "zeroshot": "zeroshot", "evaluate": "evaluate", "probe": "probe",
          "register": "register"}
"""`emoreason` command -> the dvc.yaml stage it is, in pipeline order."""


def stage_of(command: str, subcommand: str | None = None) -> str | None:
    """The dvc.yaml stage of an `emoreason` command (`gate`, `features` -> `features_gate`);
    None for commands that are not a stage (predict, serve, flow...)."""
    return STAGES.get(f"{command} {subcommand}" if subcommand else command)


def record(stage: str, seconds: float, status: int, log: Path | None = None) -> None:
    """Append one stage run to the log (default `log_path()`)."""
    log = log or log_path()
    log.parent.mkdir(parents=True, exist_ok=True)
    entry = {"stage": stage, "seconds": round(seconds, 2), "status": status,
             "ended": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    with log.open("a") as f:
        f.write(json.dumps(entry) + "\n")


def latest(log: Path | None = None) -> dict[str, dict]:
    """The last recorded run of each stage (default log `log_path()`), in pipeline order;
    unreadable lines are skipped (a run killed while writing leaves at most one)."""
    log = log or log_path()
    last: dict[str, dict] = {}
    if log.is_file():
        for line in log.read_text().splitlines():
            try:
                entry = json.loads(line)
                last[entry["stage"]] = entry
            except (ValueError, KeyError, TypeError):
                continue
    order = list(STAGES.values())
    return {s: last[s] for s in sorted(last, key=lambda s: order.index(s) if s in order
                                        else len(order))}
