"""Seconds per GRPO step and where they go, for the audio GRPO-PTR trainer and for TRL's stock
GRPOTrainer on the same LM and settings without audio, side by side in one run.

Rows: 1. TRL's stock GRPOTrainer on the SFT model's base LM with a fresh LoRA adapter (PEFT),
text prompts (the same prompts without the audio placeholders), the same rewards, G,
completion length, batch, beta and activation checkpointing; 2. the audio trainer in this
process (no Ray), then the same with `rl.activation_checkpointing` the other way; 3.-4. the
`rl` stage under Ray Train with 1 and 2 CPU workers. The in-process rows generate exactly
`--tokens` tokens per completion (EOS suppressed), so they do the same work; the Ray rows
run the stage as configured and show their mean completion length. The first step of each
row is a warm-up and is left out of the means.
Needs the demo pipeline through `sft` (`dvc repro sft`). Writes nothing in the project.
`--device cuda` runs rows 1 and 2 on the GPU, in bf16 where it computes it (the Ray rows
then stay as configured: `rl.ray.use_gpu`).
Run: python benchmarks/bench_rl.py [--steps 4] [--tokens 48] [--generations 8] [--device cpu]
"""
import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch

from components.config import load_params
from components.device import resolve_device, trainer_precision
from components.rl.timing import PHASES, PhaseTimes
from components.rl.worker import build_trainer, step_seconds

COLUMNS = ("step", *PHASES)


def stock_trainer(params, rows, tokens: int, out: Path, device: torch.device):
    """TRL's GRPOTrainer as its docs use it: a causal LM, a LoRA config, text prompts."""
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from components.models.bundled import resolve_model
    from components.rl.rewards import build_reward_funcs
    from components.speechlm.io import load_speechlm

    cfg = params.rl
    sft, audio_tokenizer = load_speechlm(cfg.sft)
    lora = sft.model.language_model.peft_config["default"]
    audio_id = sft.config.audio_token_id
    path = resolve_model(sft.config.lm_name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    texts = [audio_tokenizer.decode([t for t in row["prompt_ids"] if t != audio_id])
             for row in rows]
    funcs, weights, _ = build_reward_funcs(cfg)

    class TimedGRPOTrainer(PhaseTimes, GRPOTrainer):
        pass

    args = GRPOConfig(
        output_dir=str(out), per_device_train_batch_size=cfg.prompts_per_step * cfg.num_generations,
        num_generations=cfg.num_generations, max_completion_length=tokens,
        temperature=cfg.temperature, beta=cfg.beta, epsilon=cfg.epsilon, loss_type="grpo",
        scale_rewards="group", reward_weights=weights, learning_rate=cfg.learning_rate,
        lr_scheduler_type="constant", max_steps=cfg.max_steps, save_strategy="no",
        logging_steps=1, seed=params.base.seed, disable_dropout=True, report_to=[],
        activation_checkpointing=cfg.activation_checkpointing,
        generation_kwargs={"min_new_tokens": tokens}, **trainer_precision(device))
    return TimedGRPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(path), reward_funcs=funcs, args=args,
        train_dataset=Dataset.from_list([{**row, "prompt": text} for row, text in
                                         zip(rows, texts)]),
        processing_class=tokenizer,
        peft_config=LoraConfig(r=lora.r, lora_alpha=lora.lora_alpha, lora_dropout=0.0,
                               target_modules=sorted(lora.target_modules), bias="none"))


def timed(trainer) -> tuple[dict, float]:
    trainer.train()
    history = [e for e in trainer.state.log_history if "time/step" in e]
    length = sum(e.get("completions/mean_length", 0.0) for e in history) / len(history)
    return step_seconds(history), length


def ray_row(params, workers: int, work: Path) -> tuple[dict, float]:
    from components.rl.stage import run_rl

    params.rl.ray.num_workers = workers
    params.rl.ray.cpus_per_worker = 2.0 / workers
    params.rl.out = str(work / f"rl-{workers}")
    params.rl.checkpoint_dir = str(work / f"checkpoints-{workers}")
    params.tracking.tracking_uri = f"sqlite:///{work / 'mlflow.db'}"
    summary = run_rl(params)
    lengths = [summary[k].get("completion/length", 0.0) for k in ("first", "last")]
    return summary["seconds_per_step"], sum(lengths) / len(lengths)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=4, help="steps per row (first: warm-up)")
    parser.add_argument("--tokens", type=int, default=48, help="tokens per completion")
    parser.add_argument("--generations", type=int, default=8, help="G")
    parser.add_argument("--prompts", type=int, default=1, help="prompts per step")
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument("--device", default="cpu",
                        help="device of the in-process rows: cpu | cuda | cuda:<n> | mps")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    params = load_params(args.params)
    device = resolve_device(args.device)
    cfg = params.rl
    cfg.max_steps, cfg.max_new_tokens = args.steps + 1, args.tokens
    cfg.num_generations, cfg.prompts_per_step, cfg.save_steps = args.generations, args.prompts, 10_000
    torch.set_num_threads(2)
    work = Path(tempfile.mkdtemp(prefix="emoreason-bench-rl-"))
    cfg.checkpoint_dir = str(work / "checkpoints")
    results = {}
    try:
        ours, _, _, rows = build_trainer(params, 1, device)
        ours.generation_config.min_new_tokens = args.tokens
        stock = stock_trainer(params, rows, args.tokens, work / "stock", device)
        start = time.perf_counter()
        results["stock TRL, text, no Ray"] = timed(stock)
        results["audio GRPO-PTR, no Ray"] = timed(ours)
        checkpointing = cfg.activation_checkpointing
        cfg.activation_checkpointing = not checkpointing
        cfg.checkpoint_dir = str(work / "checkpoints-other")
        other, *_ = build_trainer(params, 1, device)
        other.generation_config.min_new_tokens = args.tokens
        results[f"  same, checkpointing {'off' if checkpointing else 'on'}"] = timed(other)
        cfg.activation_checkpointing = checkpointing
        print(f"in-process rows: {time.perf_counter() - start:.0f} s", flush=True)
        if not args.skip_ray:
            cfg.max_new_tokens = args.tokens
            for workers in (1, 2):
                results[f"rl stage, Ray, {workers} worker(s)"] = ray_row(params, workers, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = results["stock TRL, text, no Ray"][0]["step"]
    print(f"\nG={args.generations}, {args.prompts} prompt(s)/step, {args.tokens} tokens, "
          f"{args.steps} timed steps (mean s/step; the first step left out); in-process rows "
          f"on {device}" + (f" ({torch.cuda.get_device_name(device)})"
                            if device.type == "cuda" else ""))
    print(f"{'row':34s} " + " ".join(f"{c:>13s}" for c in COLUMNS) + "  length  vs stock")
    for name, (seconds, length) in results.items():
        print(f"{name:34s} " + " ".join(f"{seconds.get(c, 0.0):13.2f}" for c in COLUMNS)
              + f"  {length:6.1f}  {seconds['step'] / base:6.2f}x")
    print(json.dumps({k: {"seconds": v[0], "length": v[1]} for k, v in results.items()}))


if __name__ == "__main__":
    main()
