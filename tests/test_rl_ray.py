"""The RL stage under Ray Train on a local Ray: two CPU workers hold identical weights after
their steps and log to the stage's MLflow run; a run killed mid-way resumes from its last
checkpoint; the model folder answers `emoreason predict`."""
import json
import os
import signal
import subprocess
import time

import mlflow
import pytest
import yaml
from safetensors.torch import load_file

from components.config import as_dict
from components.rl.worker import checkpoint_folder
from components.serve.predictor import load_predictor
from components.serve.rows import predict_rows
from tests.processes import cli, kill_when, run
from tests.rl_fixture import SPREAD, tiny_rl_params

pytestmark = pytest.mark.slow

LOGGED = ("reward/total", "reward/format", "reward/outcome", "reward/reasoning",
          "reward/total_std", "ptr/tau_mean", "ptr/tau_below_1_share", "ptr/schedule_on",
          "groups/all_equal_share", "groups/outcome_all_equal_share", "kl", "train/accuracy",
          "completion/length")


def ray_processes() -> set[int]:
    out = subprocess.run(["pgrep", "-f", "ray::|raylet|gcs_server"], capture_output=True,
                         text=True, check=False).stdout
    return {int(pid) for pid in out.split()}


def new_ray_processes(before: set[int], timeout_s: float = 30) -> set[int]:
    """Ray processes started since `before` still alive after up to `timeout_s` (shutdown
    lets them exit on their own for a moment)."""
    deadline = time.monotonic() + timeout_s
    while (left := ray_processes() - before) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


def test_two_workers_stay_in_sync_and_log_every_figure(pipeline, trained, tmp_path):
    from components.rl.stage import run_rl

    params = tiny_rl_params(pipeline[0], trained, tmp_path)
    rl = params.rl
    rl.rewards = {"format": 0.3, "outcome": 1.0, "reasoning": 0.5, SPREAD: 1.0}
    rl.learning_rate, rl.max_steps, rl.log_completions_steps = 5e-2, 2, 1
    rl.ray.num_workers, rl.ray.cpus_per_worker, rl.ray.reward_actor_cpus = 2, 1.0, 0.0
    before = ray_processes()
    summary = run_rl(params)
    assert summary["workers"] == 2 and summary["steps"] == 2 and summary["device"] == "cpu"
    digests = summary["weights_digests"]
    assert len(digests) == 2 and digests[0] == digests[1] and summary["workers_in_sync"]
    # the RL half of the stacked adapter moved away from its zero start
    sft_rank = json.loads((trained / "adapter_config.json").read_text())["r"]
    stacked = load_file(os.path.join(rl.out, "adapter_model.safetensors"))
    rl_halves = [v[:, sft_rank:] for k, v in stacked.items() if ".lora_B." in k]
    assert rl_halves and any(float(h.abs().max()) > 0 for h in rl_halves)
    assert not new_ray_processes(before)  # the local Ray is shut down
    # the two workers scored half the dev clips each; the policy's temperature is saved
    saved = json.loads((tmp_path / "rl" / "task.json").read_text())["label_temperature"]
    assert saved == pytest.approx(summary["label_temperature"], rel=1e-5)
    assert summary["calibration_clips"] == json.loads(
        (trained / "eval.json").read_text())["calibration_clips"]

    mlflow.set_tracking_uri(params.tracking.tracking_uri)
    runs = mlflow.search_runs(search_all_experiments=True, filter_string="tags.stage = 'rl'",
                              output_format="list")
    assert len(runs) == 1
    client = mlflow.MlflowClient()
    for name in LOGGED:
        history = client.get_metric_history(runs[0].info.run_id, name)
        assert len(history) == 2, name
    assert runs[0].data.metrics["label_temperature"] == pytest.approx(saved, rel=1e-5)
    tables = [a.path for a in client.list_artifacts(runs[0].info.run_id, "completions")]
    assert tables, "no completion tables"


def test_a_killed_run_resumes_from_its_last_checkpoint(pipeline, trained, tmp_path):
    params = tiny_rl_params(pipeline[0], trained, tmp_path)
    params.rl.rewards = {SPREAD: 1.0}
    params.rl.max_steps, params.rl.save_steps = 3, 1
    params.rl.calibrate = False  # the policy's own probabilities, not the SFT model's temperature
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(as_dict(params)))
    folder = checkpoint_folder(params)
    before = ray_processes()
    kill_when(cli(path, "rl"), lambda: (folder / "checkpoint-1" / "trainer_state.json").exists(),
              600)
    for pid in ray_processes() - before:  # the killed driver's local Ray, if it outlived it
        os.kill(pid, signal.SIGKILL)
    assert (folder / "checkpoint-1" / "ptr_schedule.json").exists()
    printed = run(cli(path, "rl"))
    summary = json.loads((tmp_path / "rl" / "rl.json").read_text())
    assert summary["resumed_at_step"] >= 1 and summary["steps"] == 3
    assert "rl: resuming from" in printed
    assert f"rl: 3 steps on {params.rl.ray.num_workers} worker(s)" in printed
    assert not folder.exists()  # the model is saved: nothing left to resume

    audio = next(p for p in (pipeline[0] / "audio").rglob("*.wav"))
    out, = predict_rows(load_predictor(tmp_path / "rl"), [str(audio)], rationale=False)
    labels = json.loads((trained / "task.json").read_text())["labels"]
    assert out["error"] is None and out["label"] in labels
    assert abs(sum(out["probabilities"].values()) - 1) < 1e-4
    assert "label_temperature" in json.loads((trained / "task.json").read_text())
    assert "label_temperature" not in json.loads((tmp_path / "rl" / "task.json").read_text())


def test_the_local_rays_blind_cleaner_is_quiet_and_errors_still_show():
    """The setup hook targets Ray Train's own cleaner logger (a rename in a Ray upgrade fails
    here) and drops its warnings only."""
    import logging

    from ray.train.v2._internal.execution.controller import placement_group_cleaner

    from components.rl.stage import CLEANER_LOGGER, quiet_blind_cleaner

    logger = placement_group_cleaner.logger
    assert logger.name == CLEANER_LOGGER
    level = logger.level
    try:
        assert logger.isEnabledFor(logging.WARNING)
        quiet_blind_cleaner()
        assert not logger.isEnabledFor(logging.WARNING)
        assert logger.isEnabledFor(logging.ERROR)
        assert logging.getLogger("ray.train").isEnabledFor(logging.WARNING)
    finally:
        logger.setLevel(level)


def test_ray_trains_print_patch_is_off_in_the_workers():
    """Ray Train's `print` patch logs what libraries print into a captured buffer (dill's
    bytecode, from `datasets` fingerprinting the rows); the stage turns it off by the variable
    this Ray reads (a rename in a Ray upgrade fails here)."""
    from ray.train.v2._internal.constants import ENABLE_PRINT_PATCH_ENV_VAR

    from components.rl.stage import WORKER_ENV

    assert WORKER_ENV == {ENABLE_PRINT_PATCH_ENV_VAR: "0"}
