"""The `rl` stage: GRPO-PTR from the SFT model under Ray Train.

A local Ray instance with CPU workers by default; a cluster when `rl.ray.address` is set
(`use_gpu`, workers and resources per worker in params). The stage's MLflow child run (tagged
`stage=rl`) is opened here and the rank-0 worker logs every step into it. A judge or learned
reasoning scorer runs as its own Ray actor; the deterministic grounded scorer runs in the
workers' reward function.
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from pathlib import Path

from components.config import Params, as_dict
from components.rl.worker import SUMMARY_FILE, checkpoint_folder, train_worker
from components.run_stats import read_run_stats, write_run_stats


# Ray Train's detached cleaner polls the state API every second to see whether the controller
# is alive; a local Ray started without the dashboard has no state API, so it warns each time.
CLEANER_LOGGER = "ray.train.v2._internal.execution.controller.placement_group_cleaner"
WORKER_ENV = {"RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}
"""Ray Train replaces `print` in its workers with one that also logs each call, even where a
library captures stdout on purpose: `datasets` fingerprints the training rows with dill, which
disassembles a function into a captured buffer, and that bytecode then filled the stage log.
Unpatched, prints still reach the driver through Ray's worker stdout."""


def quiet_blind_cleaner() -> None:
    """Ray worker setup hook for the local Ray: silences the placement-group cleaner's
    warnings (hundreds per run, all the same) that the state API is unavailable. The local Ray
    is shut down by this stage, so there is nothing for the cleaner to clean; errors still
    show."""
    logging.getLogger(CLEANER_LOGGER).setLevel(logging.ERROR)


def _start_ray(cfg) -> bool:
    """Connect to the cluster, or start a local Ray sized for the workers; True if started
    here (and so to be shut down here)."""
    import ray

    if ray.is_initialized():
        return False
    # Workers import the project from the working directory, as the driver does.
    path = os.pathsep.join(p for p in (str(Path.cwd()), os.environ.get("PYTHONPATH")) if p)
    env = {"PYTHONPATH": path, **WORKER_ENV}
    if cfg.ray.address:  # the cluster's own settings (auth included) stay as they are
        ray.init(address=cfg.ray.address, runtime_env={"env_vars": env})
    else:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # no token file under $HOME
        needed = cfg.ray.num_workers * cfg.ray.cpus_per_worker + cfg.ray.reward_actor_cpus
        ray.init(num_cpus=max(os.cpu_count() or 1, math.ceil(needed)), include_dashboard=False,
                 runtime_env={"env_vars": {**env, "RAY_AUTH_MODE": "disabled"},
                              "worker_process_setup_hook": quiet_blind_cleaner})
    return True


def run_rl(params: Params) -> dict:
    """Train, save `rl.out` (an SFT-layout model folder) and return the run's summary."""
    import mlflow
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from components.device import ray_worker_device
    from components.rl.remote import ACTOR_NAME, start_scorer_actor
    from components.tracking import stage_run, tracking_uri

    cfg = params.rl
    if not Path(cfg.sft, "adapter_model.safetensors").is_file():
        raise FileNotFoundError(f"rl.sft: {cfg.sft} is not an SFT model folder with a LoRA "
                                "adapter (run the sft stage first)")
    if not cfg.ray.use_gpu:
        ray_worker_device(False, params.base.device)  # a CUDA name fails here, not in a worker
    started = _start_ray(cfg)
    try:
        with stage_run("rl", params.tracking, {"rl": as_dict(cfg)}) as run:
            remote = cfg.reasoning_scorer != "grounded" and "reasoning" in cfg.rewards
            if remote:
                start_scorer_actor(as_dict(params), cfg.ray.reward_actor_cpus)
            resources = {"CPU": cfg.ray.cpus_per_worker}
            if cfg.ray.use_gpu:
                resources["GPU"] = cfg.ray.gpus_per_worker
            storage = Path(cfg.checkpoint_dir).resolve() / "ray"
            trainer = TorchTrainer(
                train_worker,
                train_loop_config={"params": as_dict(params), "cwd": str(Path.cwd()),
                                   "scorer_actor": ACTOR_NAME if remote else None,
                                   "mlflow_run_id": run.info.run_id,
                                   "tracking_uri": tracking_uri(params.tracking)},
                scaling_config=ScalingConfig(num_workers=cfg.ray.num_workers,
                                             use_gpu=cfg.ray.use_gpu,
                                             resources_per_worker=resources),
                run_config=RunConfig(name="rl", storage_path=str(storage)),
            )
            start = time.perf_counter()
            trainer.fit()
            minutes = (time.perf_counter() - start) / 60
            timing = read_run_stats(cfg.out) | {"train_minutes": round(minutes, 2)}
            write_run_stats(cfg.out, timing)
            summary = json.loads((Path(cfg.out) / SUMMARY_FILE).read_text()) | timing
            mlflow.log_metrics({"train_minutes": minutes, **{
                k: v for k, v in summary.items()
                if k.startswith(("label_temperature", "calibration_")) and v is not None}})
    finally:
        if started:
            ray.shutdown()
    shutil.rmtree(checkpoint_folder(params), ignore_errors=True)  # saved: nothing to resume
    print(f"rl: {summary['steps']} steps on {summary['workers']} worker(s) in {minutes:.1f} "
          f"min; model in {cfg.out}", flush=True)
    return summary
