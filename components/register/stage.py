"""`emoreason register`: log the evaluated model as a pyfunc, register it, move the aliases.

Every new version gets the alias `challenger`, so the latest candidate can always be served
and compared (`models:/<name>@challenger`). `champion`, what production serves
(`models:/<name>@champion`), moves only through the gate of `components.register.gate`. The
decision, its reason and the numbers compared are tags on the version and on the stage's
MLflow run, and `result.json` in `register.out`. Aliases only: the registry's stages are
deprecated in MLflow 3.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from components.config import Params
from components.register.gate import (
    TAG,
    Decision,
    Scores,
    comparison_tags,
    decide,
    version_tags,
)

CHALLENGER, CHAMPION = "challenger", "champion"
EVALUATION_KEYS = ("corpus", "split", "labels")
"""What must match for two versions' metrics to be comparable."""


def read_scores(metrics_path: Path, system: str, gate_metric: str,
                ) -> tuple[Scores, dict[str, float | None]]:
    """(the gate's scores of `system`, all its scalar metrics) from evaluate's metrics.json."""
    if not metrics_path.exists():
        raise FileNotFoundError(f"{metrics_path} is missing: run the evaluate stage first")
    metrics = json.loads(metrics_path.read_text())
    systems = metrics.get("systems") or {}
    if system not in systems:
        raise ValueError(f"{metrics_path} has no system {system!r} (has {sorted(systems)}); "
                         "set register.system")
    entry = systems[system]
    scalars = {k: (float(v) if v is not None else None) for k, v in entry.items()
               if v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))}
    value = scalars.get(gate_metric)
    if value is None or not math.isfinite(value):
        raise ValueError(f"{metrics_path}: system {system!r} has no finite {gate_metric!r} "
                         f"(has {sorted(k for k, v in scalars.items() if v is not None)}); "
                         "set register.gate_metric")
    grounding = scalars.get("grounding")
    evaluation = {k: metrics[k] for k in EVALUATION_KEYS if k in metrics}
    return Scores(value, grounding if grounding is None or math.isfinite(grounding) else None,
                  evaluation), scalars


def current_champion(client, name: str, gate_metric: str) -> tuple[str | None, Scores | None]:
    """(version, scores) of the version holding the `champion` alias, or (None, None)."""
    if CHAMPION not in client.get_registered_model(name).aliases:
        return None, None
    version = client.get_model_version_by_alias(name, CHAMPION)
    return str(version.version), Scores.from_tags(version.tags, gate_metric)


def run_register(params: Params, model_folder: Path | str | None = None,
                 metrics_path: Path | str | None = None) -> dict:
    """Register `model_folder` (default: evaluate.models[register.system]) with the scores of
    register.system in `metrics_path` (default register.metrics); returns result.json's
    content."""
    import mlflow

    from components.config import as_dict
    from components.serve.pyfunc import log_pyfunc
    from components.tracking import stage_run

    cfg = params.register
    new, scalars = read_scores(Path(metrics_path or cfg.metrics), cfg.system, cfg.gate_metric)
    if model_folder is None:
        if cfg.system not in params.evaluate.models:
            raise ValueError(f"evaluate.models has no folder for system {cfg.system!r}")
        model_folder = params.evaluate.models[cfg.system]
    inference = params.inference
    with stage_run("register", params.tracking,
                   {"register": as_dict(cfg), "serve": as_dict(params.serve),
                    "inference": as_dict(inference)}) as run:
        info = log_pyfunc(Path(model_folder), "model", registered_model_name=cfg.model_name,
                          max_duration_s=params.serve.max_duration_s,
                          batch_size=params.serve.batch_size, dtype=params.serve.dtype,
                          device=params.base.device, self_correct=(
                              inference.instructions[inference.self_correct_instruction],
                              inference.self_correct_rounds),
                          repeat_block=inference.repeat_block,
                          claim_guard=inference.claim_guard)
        version = str(info.registered_model_version)
        client = mlflow.MlflowClient()
        champion_version, champion = current_champion(client, cfg.model_name, cfg.gate_metric)
        decision = decide(new, champion, champion_version, cfg.gate_metric,
                          cfg.grounding_tolerance)
        numbers = comparison_tags(new, champion, champion_version)
        tags = {**version_tags(new, cfg.gate_metric, scalars), f"{TAG}system": cfg.system,
                f"{TAG}decision": decision.name, f"{TAG}reason": decision.reason,
                f"{TAG}source": str(model_folder), **numbers}
        for key, value in tags.items():
            client.set_model_version_tag(cfg.model_name, version, key, value)
        client.set_registered_model_alias(cfg.model_name, CHALLENGER, version)
        if decision.promoted:
            client.set_registered_model_alias(cfg.model_name, CHAMPION, version)
        mlflow.set_tags({f"{TAG}decision": decision.name, f"{TAG}reason": decision.reason,
                         f"{TAG}model_name": cfg.model_name, f"{TAG}version": version,
                         **numbers})
        mlflow.log_metrics({f"gate_{k}": v for k, v in (
            ("value", new.gate_value), ("grounding", new.grounding),
            ("champion_value", champion.gate_value if champion else None),
            ("champion_grounding", champion.grounding if champion else None))
            if v is not None})
        result = _result(cfg, version, client, decision, new, champion, champion_version,
                         info.model_uri, run.info.run_id)
        out = Path(cfg.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
        mlflow.log_dict(result, "register/result.json")
    print(f"register: {cfg.model_name} v{version} {decision.name} "
          f"(aliases: {', '.join(result['aliases'])}): {decision.reason}\n"
          f"  serve: mlflow models serve -m models:/{cfg.model_name}@{CHAMPION} "
          "--env-manager local")
    return result


def _result(cfg, version: str, client, decision: Decision, new: Scores,
            champion: Scores | None, champion_version: str | None, model_uri: str,
            run_id: str) -> dict:
    aliases = sorted(client.get_model_version(cfg.model_name, version).aliases)
    return {
        "model_name": cfg.model_name, "version": version, "aliases": aliases,
        "decision": decision.name, "reason": decision.reason, "system": cfg.system,
        "gate_metric": cfg.gate_metric, "gate_value": new.gate_value,
        "grounding": new.grounding, "grounding_tolerance": cfg.grounding_tolerance,
        "evaluation": new.evaluation,
        "champion_before": None if champion is None else {
            "version": champion_version, "gate_value": champion.gate_value,
            "grounding": champion.grounding},
        "model_uri": model_uri, "registered_uri": f"models:/{cfg.model_name}/{version}",
        "run_id": run_id,
    }
