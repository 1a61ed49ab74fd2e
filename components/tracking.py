"""MLflow tracking: one parent run per pipeline run, one child run per stage.

The Prefect flow creates the parent and passes its id in EMOREASON_PARENT_RUN_ID. Under a plain
`dvc repro` each stage is its own process, so the parent is found (or created) by a pipeline
key: the git commit plus the hash of params.yaml and dvc.yaml. Stages of one configuration
thus land under one parent, whichever way the pipeline was started.
"""
import contextlib
import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

from components.config import TrackingConfig

PARENT_ENV = "EMOREASON_PARENT_RUN_ID"
DEFAULT_DB = "mlflow.db"
DEFAULT_ARTIFACTS = "mlartifacts"
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
"""Opens the experiment on MLflow 3's training-runs view rather than its GenAI pages."""


def tracking_uri(cfg: TrackingConfig) -> str:
    """params > $MLFLOW_TRACKING_URI > a SQLite file in the working directory."""
    return cfg.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{DEFAULT_DB}"


def git_commit(cwd: Path | str = ".") -> str:
    """The current commit, with '-dirty' when tracked files have changes; 'unknown' outside
    git. dvc.lock does not count: `dvc repro` rewrites it after every stage, and the stages
    of one run must keep one parent."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--",
                                ":/", ":(exclude)dvc.lock"], cwd=cwd,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")


def pipeline_key(project: Path | str = ".") -> str:
    """Identifies one pipeline configuration: commit + params.yaml + dvc.yaml."""
    digest = hashlib.sha256(git_commit(project).encode())
    for name in ("params.yaml", "dvc.yaml"):
        path = Path(project) / name
        digest.update(path.read_bytes() if path.exists() else b"")
    return digest.hexdigest()[:16]


def _setup(cfg: TrackingConfig) -> str:
    import mlflow

    mlflow.set_tracking_uri(tracking_uri(cfg))
    experiment = mlflow.get_experiment_by_name(cfg.experiment)
    if experiment is not None:
        if any(experiment.tags.get(k) != v for k, v in EXPERIMENT_KIND.items()):
            for key, value in EXPERIMENT_KIND.items():
                mlflow.MlflowClient().set_experiment_tag(experiment.experiment_id, key, value)
        return experiment.experiment_id
    location = None
    uri = tracking_uri(cfg)
    if uri.startswith("sqlite:///"):  # artifacts beside the database, not in the server's cwd
        location = (Path(uri[len("sqlite:///"):]).resolve().parent / DEFAULT_ARTIFACTS).as_uri()
    return mlflow.create_experiment(cfg.experiment, artifact_location=location,
                                    tags=EXPERIMENT_KIND)


def start_pipeline_run(cfg: TrackingConfig, key: str, name: str | None = None,
                       orchestrator: str = "dvc") -> str:
    """Create a new parent run for one pipeline run; returns its id (the run is left open).
    Parents a `dvc repro` left open (it stopped before its last stage) are ended first."""
    import mlflow

    experiment_id = _setup(cfg)
    client = mlflow.MlflowClient()
    for stale in mlflow.search_runs(
            [experiment_id], output_format="list",
            filter_string="tags.`emoreason.kind` = 'pipeline' and attributes.status = 'RUNNING'"):
        if stale.data.tags.get("emoreason.orchestrator", "dvc") == "dvc":
            client.set_terminated(stale.info.run_id, "KILLED")
    run = client.create_run(
        experiment_id, run_name=name or f"pipeline-{key[:8]}",
        tags={"emoreason.kind": "pipeline", "emoreason.pipeline_key": key,
              "emoreason.orchestrator": orchestrator, "git_commit": git_commit()},
    )
    return run.info.run_id


def find_or_create_parent(cfg: TrackingConfig, key: str, experiment_id: str) -> str:
    """The parent run id from the environment, else the newest parent with this key."""
    import mlflow

    if os.environ.get(PARENT_ENV):
        return os.environ[PARENT_ENV]
    found = mlflow.search_runs(
        [experiment_id], filter_string=f"tags.`emoreason.pipeline_key` = '{key}'",
        order_by=["attributes.start_time DESC"], max_results=1, output_format="list",
    )
    return found[0].info.run_id if found else start_pipeline_run(cfg, key)


def _flatten(prefix: str, value: object, out: dict) -> dict:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = str(value)[:500]
    return out


def last_stage(project: Path | str = ".") -> str | None:
    """The final stage of dvc.yaml (stages are listed in run order)."""
    import yaml

    path = Path(project) / "dvc.yaml"
    stages = list((yaml.safe_load(path.read_text()) or {}).get("stages", {})) \
        if path.exists() else []
    return stages[-1] if stages else None


@contextlib.contextmanager
def stage_run(stage: str, cfg: TrackingConfig, params: dict | None = None,
              run_name: str | None = None, tags: dict | None = None) -> Iterator[object]:
    """A child run for one stage under the pipeline's parent, tagged with the stage (`stage`
    and `emoreason.stage`), commit and params. Under a plain `dvc repro` the last stage of
    the graph ends the parent run (a Prefect flow ends its own)."""
    import mlflow

    experiment_id = _setup(cfg)
    parent = find_or_create_parent(cfg, pipeline_key(), experiment_id)
    with mlflow.start_run(
        run_name=run_name or stage, parent_run_id=parent, experiment_id=experiment_id,
        tags={"emoreason.kind": "stage", "emoreason.stage": stage, "stage": stage,
              "git_commit": git_commit(), **(tags or {})},
    ) as run:
        if params:
            mlflow.log_params(_flatten(stage, params, {}))
        yield run
    if not os.environ.get(PARENT_ENV) and stage == last_stage():
        mlflow.MlflowClient().set_terminated(parent, "FINISHED")


def finish_pipeline_run(cfg: TrackingConfig, run_id: str, success: bool) -> None:
    """Close a parent run opened by `start_pipeline_run`."""
    import mlflow

    _setup(cfg)
    mlflow.MlflowClient().set_terminated(run_id, "FINISHED" if success else "FAILED")
