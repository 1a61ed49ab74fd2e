"""Where training, evaluation and prediction run (`base.device`), and in what precision.

One place turns the configured name into a torch device, so every stage agrees on it and a
name the machine cannot honour fails at once, naming the param, instead of deep in a
trainer. Training on CUDA uses bf16 autocast where the GPU computes it natively (emulated
bf16 is slower than fp32); CPU and MPS train in fp32, as the CPU pipeline always has.
"""
from __future__ import annotations

import re

import torch

_NAMES = "auto, cpu, cuda, cuda:<n> or mps"
_CUDA = re.compile(r"cuda(?::(\d+))?")


def resolve_device(name: str) -> torch.device:
    """The device `base.device` names: `auto` is the first CUDA GPU, else MPS, else the CPU;
    `cuda` is the first CUDA GPU (cuda:0, the one a Trainer uses). A CUDA index that does not
    exist, or CUDA or MPS asked for on a machine without it, is a ValueError."""
    if name == "auto":
        return torch.device("cuda", 0) if torch.cuda.is_available() else _mps_or_cpu()
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError("base.device is mps but MPS is not available on this machine "
                             "(use auto or cpu)")
        return torch.device("mps")
    match = _CUDA.fullmatch(name)
    if match is None:
        raise ValueError(f"base.device: unknown device {name!r} (expected {_NAMES})")
    if not torch.cuda.is_available():
        raise ValueError(f"base.device is {name} but CUDA is not available on this machine "
                         "(use auto or cpu)")
    index = int(match.group(1) or 0)
    count = torch.cuda.device_count()
    if index >= count:
        raise ValueError(f"base.device is {name} but this machine has {count} CUDA device(s) "
                         f"(cuda:0 to cuda:{count - 1})")
    return torch.device("cuda", index)


def _mps_or_cpu() -> torch.device:
    return torch.device("mps") if torch.backends.mps.is_available() else torch.device("cpu")


def ray_worker_device(use_gpu: bool, name: str) -> torch.device:
    """A Ray Train worker's device: the GPU Ray gave it when `rl.ray.use_gpu`, else what
    `base.device` names without CUDA (`auto`: MPS, else the CPU). Ray does not hide a node's
    GPUs from workers it gave none (`RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO` is off by default),
    so `auto` alone would put every CPU worker on cuda:0, outside Ray's accounting. A CUDA
    name without `use_gpu` is a ValueError."""
    if use_gpu:
        import ray.train.torch

        return ray.train.torch.get_device()
    if _CUDA.fullmatch(name):
        raise ValueError(f"base.device is {name} but rl.ray.use_gpu is false: Ray gives the "
                         "RL workers no GPU (set rl.ray.use_gpu: true, or base.device: auto "
                         "or cpu)")
    return _mps_or_cpu() if name == "auto" else resolve_device(name)


def training_dtype(device: torch.device | str) -> torch.dtype:
    """bfloat16 on a CUDA GPU that computes it natively (compute capability 8 and up, or
    ROCm), float32 everywhere else."""
    device = torch.device(device)
    if device.type != "cuda":
        return torch.float32
    with torch.cuda.device(device):
        native = torch.cuda.is_bf16_supported(including_emulation=False)
    return torch.bfloat16 if native else torch.float32


def trainer_precision(device: torch.device | str) -> dict:
    """The device and precision fields of transformers' / TRL's TrainingArguments for `device`.

    The Trainer places the model itself: on the CPU only with `use_cpu` (else it takes any
    GPU it finds), otherwise on cuda:0 or MPS, so another CUDA index is refused here: select
    that GPU with CUDA_VISIBLE_DEVICES and use cuda. `bf16` turns on bf16 autocast (the
    weights stay float32)."""
    device = torch.device(device)
    if device.type == "cpu":
        return {"use_cpu": True, "bf16": False}
    if device.type == "mps":
        return {"use_cpu": False, "bf16": False}
    if device.type == "cuda":
        if device.index not in (None, 0):
            raise ValueError(f"base.device is {device}, but the trainer runs on the first "
                             "visible GPU: select it with CUDA_VISIBLE_DEVICES="
                             f"{device.index} and set base.device to cuda")
        return {"use_cpu": False, "bf16": training_dtype(device) == torch.bfloat16}
    raise ValueError(f"base.device: cannot train on {device} (expected {_NAMES})")


def to_device(inputs: dict, device: torch.device) -> dict:
    """A batch of model inputs with its tensors on `device` (other values as they are)."""
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
