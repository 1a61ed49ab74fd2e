"""Run a gate inside its MLflow child run, so gate outcomes sit beside the stage runs."""
from collections.abc import Callable

from components.config import TrackingConfig
from components.gates.gx_report import GateResult
from components.tracking import stage_run


def run_tracked_gate(stage: str, tracking: TrackingConfig, params: dict,
                     run: Callable[[], GateResult]) -> GateResult:
    """Run `run()` in a child run; log pass/fail, counts and the result JSON (pass or fail)."""
    import mlflow

    with stage_run(stage, tracking, params):
        result = run()
        mlflow.log_metrics({
            "gate_passed": float(result.success),
            "n_rows": float(result.n_rows),
            "n_quarantined": float(result.n_quarantined),
            "n_failed_expectations": float(len(result.failed)),
        })
        mlflow.log_artifact(str(result.report_path), artifact_path=stage)
    return result
