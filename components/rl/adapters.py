"""The RL model folder: the SFT model with its LoRA adapter and the RL adapter stacked into one.

RL trains a fresh LoRA adapter on top of the SFT model merged into the weights (so that the
adapter-disabled model is the SFT reference of the KL penalty). Two LoRA deltas on the same
layers add up: s1 B1 A1 + s2 B2 A2 = [s1 B1 | s2 B2] [A1 ; A2], one adapter of rank r1 + r2
with scaling 1. Saving that instead of the merged LM keeps the folder a few MB (the SFT
folder's layout: base LM named, adapter stored) and loadable by `load_speechlm` unchanged.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


def _scaling(config: dict) -> float:
    if config.get("use_rslora") or config.get("use_dora"):
        raise ValueError("stacking adapters supports plain LoRA only (no rsLoRA, no DoRA)")
    return config["lora_alpha"] / config["r"]


def stack_lora(first: dict[str, torch.Tensor], first_config: dict,
               second: dict[str, torch.Tensor], second_config: dict,
               ) -> tuple[dict[str, torch.Tensor], dict]:
    """One adapter (weights, config) whose delta is the sum of the two adapters' deltas."""
    if sorted(first) != sorted(second):
        only = sorted(set(first) ^ set(second))
        raise ValueError(f"the adapters adapt different layers, e.g. {only[:3]}")
    s1, s2 = _scaling(first_config), _scaling(second_config)
    stacked = {}
    for key, value in first.items():
        if ".lora_A." in key:
            stacked[key] = torch.cat([value, second[key]], dim=0).contiguous()
        elif ".lora_B." in key:
            stacked[key] = torch.cat([s1 * value, s2 * second[key]], dim=1).contiguous()
        else:
            raise ValueError(f"unexpected adapter tensor {key}")
    rank = first_config["r"] + second_config["r"]
    config = {**first_config, "r": rank, "lora_alpha": rank}
    return stacked, config


def write_rl_folder(sft_folder: Path, rl_state: dict[str, torch.Tensor], rl_config: dict,
                    out: Path) -> Path:
    """`out` = the SFT folder with its adapter replaced by SFT + RL stacked."""
    sft_folder, out = Path(sft_folder), Path(out)
    sft_config = json.loads((sft_folder / ADAPTER_CONFIG).read_text())
    weights, config = stack_lora(load_file(str(sft_folder / ADAPTER_WEIGHTS)), sft_config,
                                 rl_state, rl_config)
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(sft_folder, out, ignore=shutil.ignore_patterns(
        ADAPTER_CONFIG, ADAPTER_WEIGHTS, "eval.json"))
    (out / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    save_file(weights, str(out / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    return out
