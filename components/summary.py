"""`emoreason summary`: what a pipeline run produced, on one screen (the end of `make demo`).

The evaluation table with its 95% intervals, the registry's decision, each stage's last wall
time, and where to look next (the HTML report, the MLflow UI, serving). Everything is read
from files the stages wrote; nothing is recomputed.
"""
from __future__ import annotations

import json
from pathlib import Path

from components.config import Params
from components.stage_times import latest, log_path
from components.tracking import tracking_uri


def stage_times_table(times: dict[str, dict]) -> list[str]:
    """Lines of a per-stage time table (minutes, exit status), with the total."""
    lines = [f"{'stage':<18}{'minutes':>9}  ended"]
    for stage, entry in times.items():
        failed = "" if entry["status"] == 0 else f"  (exit {entry['status']})"
        lines.append(f"{stage:<18}{entry['seconds'] / 60:>9.1f}  {entry['ended']}{failed}")
    total = sum(e["seconds"] for e in times.values())
    lines.append(f"{'total':<18}{total / 60:>9.1f}")
    return lines


def summary_lines(params: Params, log: Path | None = None) -> list[str]:
    """The summary as lines of text; a missing output is said, not an error (a run that
    stopped early still gets its summary)."""
    from components.evaluate.stage import table_lines

    out: list[str] = []
    metrics_path = Path(params.evaluate.out) / "metrics.json"
    if metrics_path.is_file():
        metrics = json.loads(metrics_path.read_text())
        split = params.evaluate.split
        out += [f"Evaluation on the {split} split ({metrics_path}; 95% bootstrap intervals):"]
        out += table_lines(metrics["systems"])
        out.append(f"Report: {Path(params.evaluate.out) / 'report.html'}")
    else:
        out.append(f"No evaluation yet ({metrics_path} is missing).")
    result_path = Path(params.register.out) / "result.json"
    if result_path.is_file():
        r = json.loads(result_path.read_text())
        out.append(f"Registry: {r['model_name']} v{r['version']} {r['decision']} "
                   f"(aliases: {', '.join(r['aliases']) or 'none'}): {r['reason']}")
    else:
        out.append(f"Nothing registered yet ({result_path} is missing).")
    log = log or log_path()
    times = latest(log)
    if times:
        out += ["", f"Wall time of each stage's last run ({log}):", *stage_times_table(times)]
    uri = tracking_uri(params.tracking)
    out += ["", f"MLflow UI: mlflow ui --backend-store-uri {uri} --port 5000, then open "
                "http://127.0.0.1:5000 (experiment "
                f"{params.tracking.experiment!r}: one run per system under each pipeline run)",
            f"Serve the champion: emoreason serve --alias champion --port 5001"]
    return out
