"""One Ray Train worker of the RL stage: the SFT model, the training rows, the rewards and
the audio GRPO trainer; rank 0 saves the model.

Ray Train starts the workers and their torch.distributed process group (gloo on CPU, NCCL on
GPU); the Trainer inside each worker sees that group through accelerate, so each worker
generates and scores its share of the completion groups, rewards are gathered for the group
advantages, and gradients are all-reduced. Checkpoints go to a folder keyed by the run's
inputs (outside DVC's outputs, which DVC deletes before the stage runs), so a killed run
resumes from the last one; the progressive schedule's state is saved with each checkpoint.
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from transformers import TrainerCallback

from components.config import Params, as_dict, params_from_dict
from components.rl.ptr import ProgressiveSchedule
from components.run_stats import write_run_stats

SCHEDULE_FILE = "ptr_schedule.json"
SUMMARY_FILE = "rl.json"
TRL_DEPRECATIONS = r"`(gradient_checkpointing_enable|gradient_checkpointing_disable|" \
    r"is_gradient_checkpointing)` is deprecated"
"""transformers' warnings about the calls the pinned trl makes around every generation
(`trl.models.utils`): three per step, each printed anew because a `catch_warnings` block
elsewhere resets Python's once-per-place memory. Nothing for a user to act on."""


def hide_trl_deprecations() -> None:
    warnings.filterwarnings("ignore", message=TRL_DEPRECATIONS, category=FutureWarning)


class ScheduleCheckpoint(TrainerCallback):
    """Writes the progressive schedule's state into each checkpoint folder."""

    def __init__(self, schedule: ProgressiveSchedule):
        self.schedule = schedule

    def on_save(self, args, state, control, **kwargs):
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if state.is_world_process_zero and folder.is_dir():
            (folder / SCHEDULE_FILE).write_text(json.dumps(self.schedule.state_dict()))


def checkpoint_folder(params: Params) -> Path:
    """`rl.checkpoint_dir/<key>`: the rl params (but where things go), the seed and device,
    the SFT model, the training data and the code (see components.cache_keys.run_key)."""
    from components.cache_keys import run_key

    cfg = params.rl
    spec = {k: v for k, v in as_dict(cfg).items() if k not in ("out", "checkpoint_dir", "ray")}
    spec["workers"] = cfg.ray.num_workers
    return Path(cfg.checkpoint_dir) / run_key(
        {"rl": spec, "seed": params.base.seed},
        [Path(cfg.sft), Path(cfg.features), Path(cfg.manifest), Path(cfg.frames)], __name__)


def prepare_policy(model) -> None:
    """The SFT adapter merged into the weights, a fresh LoRA adapter on top (its B is zero:
    the policy starts as the SFT model, which is the adapter-disabled reference), and only
    that adapter trained: the audio encoder and projectors stay as SFT left them, so the
    reference keeps hearing the same soft tokens."""
    model.merge_lora()
    model.add_lora()
    for name, param in model.named_parameters():
        param.requires_grad_("lora_" in name and "language_model" in name)


def keep_informative(model, tokenizer, rows: list[dict], audio_for, cfg, device) -> list[dict]:
    """The rows whose completion groups are likely to differ in outcome (see
    components.rl.prompt_filter), with a line saying how many were kept. Data-parallel
    workers score a share of the rows each and gather the rest."""
    from components.rl.prompt_filter import (
        gold_probabilities,
        informative,
        uniform_group_probability,
    )

    p_gold = sharded(lambda share: gold_probabilities(
        model, tokenizer, [rows[i] for i in share], audio_for, cfg.temperature, device
    ).tolist(), len(rows))
    uniform = uniform_group_probability(p_gold, cfg.num_generations)
    kept = informative(uniform, cfg.max_uniform_group, cfg.prompts_per_step)
    print(f"rl: {len(kept)} of {len(rows)} clips kept (a group all of one outcome with "
          f"probability <= {cfg.max_uniform_group}); expected share of uniform groups "
          f"{uniform.mean():.0%} -> {uniform[kept].mean():.0%}", flush=True)
    return [rows[i] for i in kept]


def sharded(score, n: int) -> np.ndarray:
    """`score(indices) -> values` (numbers or equal-length vectors) over range(n), each
    torch.distributed rank taking every world-th index and all of them gathering the values
    in order (all of range(n) here without a process group)."""
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_world_size() == 1:
        return np.asarray(score(list(range(n))), dtype=float)
    rank, world = dist.get_rank(), dist.get_world_size()
    mine = list(range(rank, n, world))
    gathered: list = [None] * world
    dist.all_gather_object(gathered, (mine, list(score(mine))))
    out: list = [None] * n
    for indices, values in gathered:
        for i, value in zip(indices, values):
            out[i] = value
    return np.asarray(out, dtype=float)


def build_trainer(params: Params, world: int, device: torch.device, scorer=None,
                  report_to: list[str] | None = None, log_table=None):
    """(trainer, schedule, the checkpoint to resume from or None, rows) for one worker of
    `world`; `scorer`: the reasoning scorer (default: built here from params)."""
    import pandas as pd
    from datasets import Dataset
    from trl import GRPOConfig

    from components.device import trainer_precision
    from components.distill.stage import load_cues
    from components.prepare.schema import read_manifest
    from components.rl.data import build_rows, training_examples
    from components.rl.reasoning import build_scorer
    from components.rl.rewards import build_reward_funcs
    from components.rl.trainer import AudioGRPOTrainer
    from components.speechlm.collate import AudioSource, SpeechCollator
    from components.speechlm.io import TASK_FILE, load_speechlm
    from components.speechlm.train import last_checkpoint

    hide_trl_deprecations()
    cfg = params.rl
    per_device, rest = divmod(cfg.prompts_per_step * cfg.num_generations, world)
    if rest:
        raise ValueError(f"rl.prompts_per_step x rl.num_generations "
                         f"({cfg.prompts_per_step * cfg.num_generations}) must divide among "
                         f"{world} workers")
    model, tokenizer = load_speechlm(cfg.sft)
    prepare_policy(model)
    task = json.loads((Path(cfg.sft) / TASK_FILE).read_text())
    manifest, meta = read_manifest(cfg.manifest)
    features = pd.read_parquet(cfg.features)
    examples = training_examples(features, manifest, task["format"], task["transcript_source"],
                                 cfg.max_clips, params.base.seed,
                                 prosody_caption=task.get("prosody_caption", False),
                                 splits=cfg.splits)
    source = AudioSource.from_features(model, cfg.frames, manifest, meta.data_root,
                                       {e["utt_id"] for e in examples}, features)
    collator = SpeechCollator(tokenizer, source, task["labels"])
    cues = {c.utt_id: c for c in load_cues(Path(cfg.features), Path(cfg.manifest), cfg.splits)}
    rows = build_rows(examples, source, collator, manifest, cues, task["labels"])

    def audio_for(utt_ids: list[str]) -> dict:
        return source.batch(utt_ids)[0]

    if cfg.max_uniform_group < 1.0:
        rows = keep_informative(model, tokenizer, rows, audio_for, cfg, device)
    if scorer is None and "reasoning" in cfg.rewards:
        scorer = build_scorer(cfg, params.distill.verify, params.base.seed)
    funcs, weights, names = build_reward_funcs(cfg, scorer)
    folder = checkpoint_folder(params)
    folder.mkdir(parents=True, exist_ok=True)
    args = GRPOConfig(
        output_dir=str(folder), per_device_train_batch_size=per_device,
        num_generations=cfg.num_generations, max_completion_length=cfg.max_new_tokens,
        temperature=cfg.temperature, beta=cfg.beta, epsilon=cfg.epsilon, loss_type="grpo",
        scale_rewards="group", reward_weights=weights, learning_rate=cfg.learning_rate,
        lr_scheduler_type="constant", max_steps=cfg.max_steps, save_strategy="steps",
        save_steps=cfg.save_steps, save_total_limit=2, logging_steps=1, seed=params.base.seed,
        remove_unused_columns=False, dataloader_num_workers=0, disable_dropout=True,
        activation_checkpointing=cfg.activation_checkpointing,
        generation_kwargs={"suppress_tokens": [model.config.audio_token_id]},
        report_to=report_to or [], **trainer_precision(device),
    )
    schedule = ProgressiveSchedule.from_config(cfg.ptr)
    resume = last_checkpoint(folder)
    if resume is not None and (resume / SCHEDULE_FILE).is_file():
        schedule.load_state_dict(json.loads((resume / SCHEDULE_FILE).read_text()))
    trainer = AudioGRPOTrainer(
        model=model, reward_funcs=funcs, args=args, train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer, audio_for=audio_for,
        reward_names=names, schedule=schedule, ptr_cfg=cfg.ptr, log_table=log_table,
        log_table_every=cfg.log_completions_steps, callbacks=[ScheduleCheckpoint(schedule)],
    )
    return trainer, schedule, resume, rows


def calibrated_on_dev(policy, tokenizer, params: Params, device: torch.device) -> dict:
    """The trained policy's label temperature fitted on the dev clips (which `rl.calibrate`
    keeps out of the prompts), scored in shares by the data-parallel workers; or
    {"label_temperature": None} where the format cannot be calibrated. The RL folder is the
    SFT folder with new weights: without this its task.json would keep the SFT model's
    temperature, fitted to probabilities GRPO has since sharpened."""
    import torch.distributed as dist

    from components.speechlm.calibration import announce, calibrate_folder_task
    from components.speechlm.io import TASK_FILE

    cfg = params.rl
    task = json.loads((Path(cfg.sft) / TASK_FILE).read_text())
    fitted = calibrate_folder_task(policy, tokenizer, task, cfg.features, cfg.frames,
                                   cfg.manifest, device, params.base.seed, shard=sharded)
    return announce("rl", fitted, show=not dist.is_initialized() or dist.get_rank() == 0)


def train_worker(config: dict) -> None:
    """The Ray Train loop (`config`: {"params": ..., "cwd": the project folder,
    "scorer_actor": name or None, "mlflow_run_id": ..., "tracking_uri": ...})."""
    import ray.train

    from components.device import ray_worker_device
    from components.rl.adapters import write_rl_folder
    from components.rl.remote import RemoteScorer
    from components.speechlm.io import set_label_temperature

    os.chdir(config["cwd"])  # params hold paths relative to the project
    params = params_from_dict(config["params"])
    cfg = params.rl
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.set_num_threads(max(1, int(cfg.ray.cpus_per_worker)))
    device = ray_worker_device(cfg.ray.use_gpu, params.base.device)
    tracked = bool(config.get("mlflow_run_id")) and rank == 0
    if tracked:
        os.environ["MLFLOW_RUN_ID"] = config["mlflow_run_id"]
        os.environ["MLFLOW_TRACKING_URI"] = config["tracking_uri"]
    scorer = RemoteScorer(config["scorer_actor"]) if config.get("scorer_actor") else None
    trainer, schedule, resume, rows = build_trainer(
        params, world, device, scorer, report_to=["mlflow"] if tracked else [],
        log_table=_log_table if tracked else None)
    if resume is not None:
        print(f"rl: resuming from {resume}", flush=True)
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    policy = trainer.accelerator.unwrap_model(trainer.model)
    calibrated = calibrated_on_dev(policy, trainer.processing_class, params, device) \
        if cfg.calibrate else {}
    history = [entry for entry in trainer.state.log_history if "reward/total" in entry]
    digests = worker_digests(policy, world)
    summary = {"steps": trainer.state.global_step, "workers": world, "device": str(device),
               "workers_in_sync": len(set(digests)) == 1, "weights_digests": digests,
               "resumed_at_step": int(resume.name.rpartition("-")[2]) if resume else 0,
               "clips": len(rows), "schedule_on_at_end": schedule.on,
               "train_accuracy_at_end": schedule.accuracy,
               "first": untimed(history[0]) if history else {},
               "last": untimed(history[-1]) if history else {}, **calibrated}
    if rank == 0:
        lm = policy.model.language_model
        write_rl_folder(Path(cfg.sft), _adapter_state(lm), _adapter_config(lm), Path(cfg.out))
        set_label_temperature(cfg.out, calibrated.get("label_temperature"))
        (Path(cfg.out) / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
        write_run_stats(cfg.out, {"seconds_per_step": step_seconds(history)})
    ray.train.report({k: v for k, v in summary.items() if isinstance(v, (int, float, bool))})


def untimed(entry: dict) -> dict:
    """A step's log without its seconds (`time/<phase>`, TRL's `step_time`): wall-clock time
    goes to `<out>.run.json`, not into the model folder."""
    return {k: v for k, v in entry.items() if not k.startswith("time/") and k != "step_time"}


def step_seconds(history: list[dict]) -> dict[str, float]:
    """Mean `time/<phase>` seconds per step, the first step (warm-up) left out when there
    are more."""
    steps = history[1:] if len(history) > 1 else history
    keys = sorted({k for entry in steps for k in entry if k.startswith("time/")})
    return {k.removeprefix("time/"): round(sum(e.get(k, 0.0) for e in steps) / len(steps), 3)
            for k in keys}


def worker_digests(model, world: int) -> list[str]:
    """Every worker's sha256 of its trainable weights, in rank order: data-parallel training
    keeps them identical, and a worker that drifted shows here."""
    import hashlib

    import torch.distributed as dist

    digest = hashlib.sha256()
    for name, param in sorted(model.named_parameters()):
        if param.requires_grad:
            digest.update(name.encode())
            digest.update(param.detach().float().cpu().numpy().tobytes())
    mine = digest.hexdigest()
    if world == 1 or not dist.is_initialized():
        return [mine]
    gathered: list[str | None] = [None] * world
    dist.all_gather_object(gathered, mine)
    return [str(d) for d in gathered]


def _log_table(rows: dict, artifact_file: str) -> None:
    import mlflow

    if mlflow.active_run() is not None:
        mlflow.log_table(rows, artifact_file)


def _adapter_state(language_model) -> dict[str, torch.Tensor]:
    from peft.functional import get_peft_model_state_dict

    state = get_peft_model_state_dict(language_model, save_embedding_layers=False)
    return {k: v.detach().float().cpu().contiguous() for k, v in state.items()}


def _adapter_config(language_model) -> dict:
    c = language_model.peft_config["default"]
    return {"r": c.r, "lora_alpha": c.lora_alpha, "use_rslora": c.use_rslora,
            "use_dora": c.use_dora}
