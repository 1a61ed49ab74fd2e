"""The Prefect flow `ser-pipeline`: one task per dvc.yaml stage, run through DVC itself.

Each task runs `dvc repro --single-item <stage>`, so the flow and a plain `dvc repro` can never
disagree about what ran or what is up to date. The flow opens one MLflow parent run and passes
its id to the stages (EMOREASON_PARENT_RUN_ID), which log their own child runs under it.
Gate stages publish their result as a Prefect artifact, pass or fail.
"""
import json
import os
import subprocess
from pathlib import Path

import yaml
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from components.config import load_params
from components.tracking import (
    PARENT_ENV,
    finish_pipeline_run,
    pipeline_key,
    start_pipeline_run,
)

#: Stages whose failures can be transient (network teachers, cluster jobs) get retries;
#: deterministic stages fail fast.
RETRIES = {"distill": 2, "rl": 1}


def pipeline_stages(project: Path) -> list[str]:
    """Stage names in dvc.yaml order (the file lists them in run order)."""
    spec = yaml.safe_load((project / "dvc.yaml").read_text())
    return list(spec.get("stages", {}))


def gate_report(project: Path, stage: str) -> Path | None:
    """The result.json a gate stage writes (its `reports/<stage>` output), if it is a gate."""
    spec = yaml.safe_load((project / "dvc.yaml").read_text())["stages"][stage]
    for out in spec.get("outs", []):
        name = next(iter(out)) if isinstance(out, dict) else out
        if name.startswith("reports/") and (project / name / "result.json").exists():
            return project / name / "result.json"
    return None


def gate_markdown(stage: str, result: dict) -> str:
    """A short Markdown table of a gate's expectations for the Prefect UI."""
    lines = [f"# {stage}: {'passed' if result.get('success') else 'FAILED'}", ""]
    for key in ("n_rows", "n_quarantined", "quarantine_share"):
        if key in result:
            lines.append(f"- {key}: {result[key]}")
    lines += ["", "| expectation | column | success | observed |", "|---|---|---|---|"]
    for exp in result.get("expectations", []):
        observed = str(exp.get("observed_value", exp.get("unexpected_count", "")))
        observed = observed[:80].replace("|", "/")
        lines.append(f"| {exp.get('expectation', '')} | {exp.get('column') or ''} | "
                     f"{exp.get('success')} | {observed} |")
    return "\n".join(lines)


@task(name="dvc-stage", task_run_name="{stage}")
def run_stage(stage: str, project: str, parent_run_id: str, force: bool = False) -> str:
    """Run one DVC stage; publish a gate's result as an artifact; fail with DVC's output."""
    logger = get_run_logger()
    env = {**os.environ, PARENT_ENV: parent_run_id}
    cmd = ["dvc", "repro", "--single-item", stage] + (["--force"] if force else [])
    proc = subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True)
    logger.info("%s\n%s", " ".join(cmd), proc.stdout[-4000:])
    report = gate_report(Path(project), stage)
    if report is not None:
        result = json.loads(report.read_text())
        create_markdown_artifact(
            key=stage.replace("_", "-"), markdown=gate_markdown(stage, result),
            description=f"{stage} result",
        )
    if proc.returncode != 0:
        raise RuntimeError(f"stage {stage} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return stage


@flow(name="ser-pipeline", log_prints=True)
def ser_pipeline(stages: list[str] | None = None, force: bool = False,
                 project_dir: str = ".") -> list[str]:
    """Run the pipeline's stages in order under one MLflow parent run."""
    project = Path(project_dir).resolve()
    params = load_params(project / "params.yaml")
    known = pipeline_stages(project)
    unknown = sorted(set(stages or []) - set(known))
    if unknown:
        raise ValueError(f"unknown stages {unknown}; dvc.yaml has {known}")
    cwd = Path.cwd()
    os.chdir(project)  # MLflow's default SQLite store and the pipeline key are project-relative
    try:
        parent = start_pipeline_run(params.tracking, pipeline_key(project),
                                    orchestrator="prefect")
        done, success = [], False
        try:
            for stage in [s for s in known if not stages or s in stages]:
                task_fn = run_stage.with_options(retries=RETRIES.get(stage, 0),
                                                 retry_delay_seconds=10)
                done.append(task_fn(stage, str(project), parent, force))
            success = True
        finally:
            finish_pipeline_run(params.tracking, parent, success)
    finally:
        os.chdir(cwd)
    return done


def serve() -> None:
    """Serve the flow as deployment `ser-pipeline/local` for `prefect deployment run`."""
    ser_pipeline.serve(name="local")
