"""Where a GRPO step's time goes, logged with the step's metrics as `time/<phase>` seconds.

A mixin before TRL's GRPOTrainer in the bases: it times TRL's own phases (generation, reward
scoring, log-prob forwards without gradient for the old policy and the reference, the loss
forward) and counts the rest of the step as backward. The same mixin on TRL's stock trainer
gives the comparison in benchmarks/bench_rl.py.
"""
from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Iterator

import torch

PHASES = ("generation", "rewards", "logps_no_grad", "loss_forward", "backward")


class PhaseTimes:
    """Mixin for a GRPOTrainer subclass: `time/<phase>` and `time/step` in each step's log."""

    _seconds: dict[str, float]

    @contextlib.contextmanager
    def _timed(self, phase: str) -> Iterator[None]:
        if not hasattr(self, "_seconds"):
            self._seconds = defaultdict(float)
        start = time.perf_counter()
        try:
            yield
        finally:
            self._seconds[phase] += time.perf_counter() - start

    def training_step(self, model, inputs, num_items_in_batch):
        self._seconds = defaultdict(float)
        start = time.perf_counter()
        loss = super().training_step(model, inputs, num_items_in_batch)
        total = time.perf_counter() - start
        metrics = self._metrics["train"]
        for phase in PHASES[:-1]:
            metrics[f"time/{phase}"].append(self._seconds.get(phase, 0.0))
        metrics["time/backward"].append(max(0.0, total - sum(self._seconds.values())))
        metrics["time/step"].append(total)
        return loss

    def _generate_single_turn(self, *args, **kwargs):
        with self._timed("generation"):
            return super()._generate_single_turn(*args, **kwargs)

    def _calculate_rewards(self, *args, **kwargs):
        with self._timed("rewards"):
            return super()._calculate_rewards(*args, **kwargs)

    def compute_loss(self, *args, **kwargs):
        with self._timed("loss_forward"):
            return super().compute_loss(*args, **kwargs)

    def _get_per_token_logps_and_entropies(self, *args, **kwargs):
        if torch.is_grad_enabled():  # inside the loss forward, timed there
            return super()._get_per_token_logps_and_entropies(*args, **kwargs)
        with self._timed("logps_no_grad"):
            return super()._get_per_token_logps_and_entropies(*args, **kwargs)
