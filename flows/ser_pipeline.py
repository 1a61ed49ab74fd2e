"""The Prefect flow `ser-pipeline`: one task per dvc.yaml stage, run through DVC itself, and
each flow run saved as a DVC experiment.

Each task runs `dvc repro --single-item <stage>`, so the flow and a plain `dvc repro` can never
disagree about what ran or what is up to date: a stage whose code, data and params did not
change is skipped. The run's params are `params.yaml` with a profile (`profiles/<name>.yaml`)
and `set_params` (dotted keys) merged over it, written into `params.yaml` for the run, as
`dvc exp run --set-param` does, and restored afterwards. When every stage has passed,
`dvc exp save` records the workspace (params, dvc.lock, metrics, plots) as an experiment named
after the flow run, so `dvc exp show` lists it and `dvc exp apply <name>` brings its params back.

The flow opens one MLflow parent run and passes its id to the stages (EMOREASON_PARENT_RUN_ID),
which log their own child runs under it. Gate stages publish their result as a Prefect artifact,
pass or fail; the evaluation table, the MLflow links and the experiment are published at the end.
"""
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import yaml
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from components.config import load_params, params_from_dict
from components.tracking import (
    PARENT_ENV,
    finish_pipeline_run,
    pipeline_key,
    start_pipeline_run,
    tracking_uri,
)

#: Stages whose failures can be transient (a teacher endpoint, a Ray cluster connection) get
#: retries; the gates and the other deterministic stages fail at once.
RETRIES = {"distill": 2, "rl": 1}
PROFILES = "profiles"
#: The evaluation table's columns (metrics.json keys of each system).
TABLE_KEYS = ("wa", "ua", "macro_f1", "annotator_aware_macro_f1", "grounding")


def pipeline_stages(project: Path) -> list[str]:
    """Stage names in dvc.yaml order (the file lists them in run order)."""
    spec = yaml.safe_load((project / "dvc.yaml").read_text())
    return list(spec.get("stages", {}))


def load_profile(project: Path, profile: str | None) -> dict:
    """The overlay `profiles/<profile>.yaml` (nested sections, merged over params.yaml)."""
    if not profile:
        return {}
    path = project / PROFILES / f"{profile}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (project / PROFILES).glob("*.yaml"))
        raise ValueError(f"unknown profile {profile!r}; {PROFILES}/ has {known}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path.name}: expected a mapping of params sections")
    return data


def nest(dotted: dict[str, Any]) -> dict:
    """{'sft.max_steps': 3} -> {'sft': {'max_steps': 3}}."""
    nested: dict = {}
    for key, value in dotted.items():
        *parents, leaf = key.split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


def merge(base: dict, overlay: dict) -> dict:
    """`overlay` over `base`, in place: mappings merge key by key, any other value replaces."""
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = value
    return base


def run_overlay(project: Path, profile: str | None, set_params: dict[str, Any] | None,
                ray_address: str | None) -> dict:
    """The profile, then `set_params`, then the Ray address (rl.ray.address)."""
    overlay = merge(load_profile(project, profile), nest(set_params or {}))
    if ray_address:
        merge(overlay, {"rl": {"ray": {"address": ray_address}}})
    return overlay


def apply_overlay(project: Path, overlay: dict) -> None:
    """Write the overlay into params.yaml (comments kept), after checking that the merged
    params load: a typo in a profile or an override fails before anything runs."""
    from dvc.utils.serialize import modify_yaml

    path = project / "params.yaml"
    params_from_dict(merge(yaml.safe_load(path.read_text()) or {}, overlay))
    with modify_yaml(path) as data:
        merge(data, overlay)


def require_git(project: Path) -> None:
    """DVC experiments are git commits: the project must be a git repository with a commit."""
    proc = subprocess.run(["git", "rev-parse", "--verify", "HEAD"], cwd=project,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{project} is not a git repository with a commit; each flow run is "
                           "saved as a DVC experiment (git init, git add, git commit first)")


def gate_report(project: Path, stage: str) -> Path | None:
    """The result.json a gate stage (`emoreason gate ...`) writes in its `reports/` output."""
    spec = yaml.safe_load((project / "dvc.yaml").read_text())["stages"][stage]
    if not str(spec.get("cmd", "")).startswith("emoreason gate "):
        return None
    for out in spec.get("outs", []):
        name = next(iter(out)) if isinstance(out, dict) else out
        if name.startswith("reports/") and (project / name / "result.json").exists():
            return project / name / "result.json"
    return None


def tracked_by_experiment(project: Path) -> list[str]:
    """The metrics and plots files of dvc.yaml that exist: git ignores them (cache: false
    outputs under reports/), so `dvc exp save` must be told to include them."""
    spec = yaml.safe_load((project / "dvc.yaml").read_text())["stages"]
    paths = []
    for stage in spec.values():
        for entry in stage.get("metrics", []) + stage.get("plots", []):
            name = next(iter(entry)) if isinstance(entry, dict) else entry
            if (project / name).exists():
                paths.append(name)
    return paths


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


def evaluation_markdown(metrics: dict) -> str:
    """reports/evaluate/metrics.json as a table: each system's figures and 95% intervals."""
    lines = ["# Evaluation (test split)", "",
             "| system | " + " | ".join(TABLE_KEYS) + " |",
             "|---|" + "---|" * len(TABLE_KEYS)]
    for name, entry in metrics.get("systems", {}).items():
        cells = []
        for key in TABLE_KEYS:
            value, ci = entry.get(key), entry.get("ci", {}).get(key)
            cells.append("n/a" if value is None else
                         f"{value:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def mlflow_markdown(uri: str, experiment_id: str, run_id: str, registered: dict | None) -> str:
    """Where the run is in MLflow: UI links on a tracking server, the store and ids otherwise."""
    web = uri.startswith(("http://", "https://"))
    base = uri.rstrip("/")
    run = f"{base}/#/experiments/{experiment_id}/runs/{run_id}?workflowType=machine_learning"
    lines = ["# MLflow", "", f"- tracking URI: `{uri}`",
             f"- pipeline run: [{run_id}]({run})" if web else f"- pipeline run id: `{run_id}`"]
    if registered:
        name, version = registered["model_name"], registered["version"]
        text = f"{name} v{version} ({registered['decision']}; aliases " \
               f"{', '.join(registered['aliases']) or 'none'})"
        lines.append(f"- registered model: [{text}]({base}/#/models/{name}/versions/{version})"
                     if web else f"- registered model: {text}")
    return "\n".join(lines)


@task(name="dvc-stage", task_run_name="{stage}")
def run_stage(stage: str, project: str, parent_run_id: str, force: bool = False) -> bool:
    """Run one DVC stage; publish a gate's result as an artifact; fail with DVC's output.
    True if DVC ran the stage, False if it was up to date."""
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
    return f"Running stage '{stage}'" in proc.stdout


@task(name="dvc-exp-save", task_run_name="dvc-exp-save {name}")
def save_experiment(project: str, name: str) -> str:
    """`dvc exp save`: the workspace (params, dvc.lock, metrics, plots) as experiment `name`."""
    include = [arg for path in tracked_by_experiment(Path(project)) for arg in ("-I", path)]
    cmd = ["dvc", "exp", "save", "--name", name, *include]
    proc = subprocess.run(cmd, cwd=project, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return name


def publish_results(project: Path, params, parent: str, summary: dict) -> None:
    """The evaluation table, the MLflow links and the DVC experiment as Prefect artifacts."""
    import mlflow

    metrics = project / params.evaluate.out / "metrics.json"
    if metrics.exists():
        create_markdown_artifact(key="evaluation",
                                 markdown=evaluation_markdown(json.loads(metrics.read_text())),
                                 description="reports/evaluate/metrics.json")
    register = project / params.register.out / "result.json"
    uri = tracking_uri(params.tracking)
    client = mlflow.MlflowClient(uri)
    client.set_tag(parent, "emoreason.dvc_experiment", summary["experiment"])
    experiment_id = client.get_run(parent).info.experiment_id
    create_markdown_artifact(
        key="mlflow", description="MLflow run and registered model",
        markdown=mlflow_markdown(uri, experiment_id, parent,
                                 json.loads(register.read_text()) if register.exists() else None))
    lines = [f"# DVC experiment {summary['experiment']}", "",
             f"- profile: {summary['profile'] or '(none)'}",
             f"- set_params: `{json.dumps(summary['set_params'])}`",
             f"- ran: {', '.join(summary['ran']) or 'nothing (all up to date)'}",
             f"- up to date: {', '.join(summary['skipped']) or 'none'}",
             "", f"Reproduce: `dvc exp apply {summary['experiment']} && dvc repro`"]
    create_markdown_artifact(key="dvc-experiment", markdown="\n".join(lines),
                             description="the run as a DVC experiment")


@flow(name="ser-pipeline", log_prints=True)
def ser_pipeline(profile: str | None = None, set_params: dict[str, Any] | None = None,
                 stages: list[str] | None = None, ray_address: str | None = None,
                 force: bool = False, project_dir: str = ".",
                 experiment: str | None = None) -> dict:
    """Run the pipeline's stages (all, or `stages`) in order under one MLflow parent run with
    the profile and `set_params` applied, then save the run as DVC experiment `experiment`
    (default: the flow run's name and id). Returns the experiment name and the stages DVC ran
    and found up to date."""
    project = Path(project_dir).resolve()
    known = pipeline_stages(project)
    unknown = sorted(set(stages or []) - set(known))
    if unknown:
        raise ValueError(f"unknown stages {unknown}; dvc.yaml has {known}")
    require_git(project)
    overlay = run_overlay(project, profile, set_params, ray_address)
    name = experiment or f"{flow_run.get_name()}-{str(flow_run.get_id())[:8]}"
    params_file = project / "params.yaml"
    original = params_file.read_text()
    cwd = Path.cwd()
    os.chdir(project)  # MLflow's default SQLite store and the pipeline key are project-relative
    try:
        apply_overlay(project, overlay)
        params = load_params(params_file)
        parent = start_pipeline_run(params.tracking, pipeline_key(project),
                                    orchestrator="prefect")
        ran, skipped, success = [], [], False
        try:
            for stage in [s for s in known if not stages or s in stages]:
                task_fn = run_stage.with_options(retries=RETRIES.get(stage, 0),
                                                 retry_delay_seconds=10)
                (ran if task_fn(stage, str(project), parent, force) else skipped).append(stage)
            save_experiment(str(project), name)
            success = True
        finally:
            finish_pipeline_run(params.tracking, parent, success)
        summary = {"experiment": name, "profile": profile, "set_params": set_params or {},
                   "ran": ran, "skipped": skipped}
        publish_results(project, params, parent, summary)
        print(f"DVC experiment {name}: ran {ran or 'nothing'}; up to date {skipped or 'none'}")
        return summary
    finally:
        params_file.write_text(original)
        os.chdir(cwd)


def serve() -> None:
    """Serve the flow as deployment `ser-pipeline/local` without a work pool (`emoreason flow
    --serve`); `make up` runs it on a worker instead (prefect.yaml)."""
    ser_pipeline.serve(name="local")
