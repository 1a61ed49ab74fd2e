"""The PTR part of GRPO-PTR: the trust weight, the progressive schedule and the total reward.

A reasoning reward can be gamed: a group whose wrong answers come with better-scored
rationales than its right ones teaches the model that fine words pay more than right answers.
The trust weight tau shrinks R_t in such groups; the progressive schedule keeps R_t out until
the model answers well enough for its rationales to be worth shaping. Pure functions over
arrays (lists, numpy arrays or CPU torch tensors); None and NaN rewards count as 0, as in
TRL's sum over reward functions.
"""
from __future__ import annotations

import math
from collections import deque

import numpy as np

from components.config import PTRConfig

REASONING = "reasoning"
OUTCOMES = ("outcome", "outcome_annotator_aware")
"""Reward names whose value splits a group into right (R_o >= 1) and wrong answers."""


def _as_array(values, ndim: int) -> np.ndarray:
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    out = np.nan_to_num(np.array(values, dtype=float), nan=0.0)
    if out.ndim != ndim:
        raise ValueError(f"expected a {ndim}-d array of rewards, got shape {out.shape}")
    return out


def _groups(n: int, group_size: int) -> int:
    if group_size < 1 or n < 1 or n % group_size:
        raise ValueError(f"{n} completions do not split into groups of {group_size}")
    return n // group_size


def trust_weights(outcome, reasoning, group_size: int) -> np.ndarray:
    """tau per group of `group_size` consecutive completions (TRL's order: a prompt's
    completions are adjacent).

    mu_c = mean R_t of the completions with R_o >= 1, mu_w = mean R_t of the others (a
    partially credited label counts as wrong: only the consensus label is right);
    tau = exp(mu_c - mu_w) when mu_c < mu_w, else 1; 1 when either subset is empty.
    """
    r_o, r_t = _as_array(outcome, 1), _as_array(reasoning, 1)
    if r_o.shape != r_t.shape:
        raise ValueError(f"outcome {r_o.shape} and reasoning {r_t.shape} rewards differ in shape")
    n_groups = _groups(len(r_o), group_size)
    correct = (r_o >= 1.0).reshape(n_groups, group_size)
    r_t = r_t.reshape(n_groups, group_size)
    tau = np.ones(n_groups)
    for g in range(n_groups):
        right, wrong = r_t[g][correct[g]], r_t[g][~correct[g]]
        if len(right) and len(wrong) and right.mean() < wrong.mean():
            tau[g] = math.exp(right.mean() - wrong.mean())
    return tau


class ProgressiveSchedule:
    """When R_t enters the reward: once the running training accuracy over the last `window`
    completions reaches `threshold` (the window must be full first, so a lucky first batch
    does not switch it on). It stays on from then: accuracy dips as R_t starts shaping the
    rationales, and a reward that switched back and forth would be a moving target.
    Disabled (`enabled=False`, the no-schedule ablation) it is on from the start."""

    def __init__(self, threshold: float = 0.5, window: int = 64, enabled: bool = True):
        if not 0.0 <= threshold <= 1.0 or window < 1:
            raise ValueError(f"threshold must be in [0, 1] and window >= 1, got {threshold}, "
                             f"{window}")
        self.threshold, self.window, self.enabled = threshold, window, enabled
        self._recent: deque[bool] = deque(maxlen=window)
        self._reached = False

    @classmethod
    def from_config(cls, cfg: PTRConfig) -> ProgressiveSchedule:
        return cls(cfg.accuracy_threshold, cfg.accuracy_window, cfg.schedule)

    def update(self, correct) -> None:
        """Add the latest completions' correctness (R_o >= 1), oldest first."""
        self._recent.extend(bool(c) for c in correct)
        if len(self._recent) == self.window and self.accuracy >= self.threshold:
            self._reached = True

    @property
    def accuracy(self) -> float:
        """Share correct over the last `window` completions (fewer at the start; 0 before any)."""
        return sum(self._recent) / len(self._recent) if self._recent else 0.0

    @property
    def on(self) -> bool:
        return not self.enabled or self._reached

    def state_dict(self) -> dict:
        """What a resumed run needs to continue the schedule where it stopped."""
        return {"recent": list(self._recent), "reached": self._reached}

    def load_state_dict(self, state: dict) -> None:
        self._recent = deque((bool(c) for c in state["recent"]), maxlen=self.window)
        self._reached = bool(state["reached"])


def combine(rewards_per_func, names: list[str], weights: list[float], group_size: int,
            ptr_cfg: PTRConfig, schedule_on: bool) -> tuple[np.ndarray, dict[str, float]]:
    """(total reward per completion [N], stats) from the per-function rewards [N, F].

    R = sum_i w_i r_i, where the `reasoning` term is multiplied by its group's tau (when
    `ptr_cfg.tau`) and left out while `schedule_on` is False (when `ptr_cfg.schedule`).
    Without a `reasoning` reward (the outcome-only ablation) this is the plain weighted sum.
    tau is split on `outcome`, else on `outcome_annotator_aware`; with neither it is 1.

    Stats: `ptr/tau_mean` and `ptr/tau_below_1_share` over groups (computed even when
    `ptr_cfg.tau` is off, to show what it would do), `ptr/schedule_on` (1.0 when R_t counts
    this step), `groups/all_equal_share` (groups whose totals are all equal: no advantage,
    no learning signal) and, with an outcome reward, `groups/outcome_all_equal_share` (groups
    whose completions all got the same outcome reward: the label itself gives no signal, only
    the other rewards can).
    """
    r = _as_array(rewards_per_func, 2)
    names = list(names)
    w = np.asarray(weights, dtype=float)
    if r.shape[1] != len(names) or len(w) != len(names):
        raise ValueError(f"{r.shape[1]} reward columns, {len(names)} names and {len(w)} weights")
    n_groups = _groups(r.shape[0], group_size)
    terms = r * w
    tau = np.ones(n_groups)
    reasoning_counts = not ptr_cfg.schedule or bool(schedule_on)
    outcome = next((names.index(o) for o in OUTCOMES if o in names), None)
    if REASONING in names:
        j = names.index(REASONING)
        if outcome is not None:
            tau = trust_weights(r[:, outcome], r[:, j], group_size)
        if not reasoning_counts:
            terms[:, j] = 0.0
        elif ptr_cfg.tau:
            terms[:, j] *= np.repeat(tau, group_size)
    total = terms.sum(axis=1)
    spread = np.ptp(total.reshape(n_groups, group_size), axis=1)
    stats = {
        "ptr/tau_mean": float(tau.mean()),
        "ptr/tau_below_1_share": float((tau < 1.0).mean()),
        "ptr/schedule_on": float(reasoning_counts),
        "groups/all_equal_share": float((spread <= 1e-9).mean()),
    }
    if outcome is not None:
        outcomes = r[:, outcome].reshape(n_groups, group_size)
        stats["groups/outcome_all_equal_share"] = float((np.ptp(outcomes, axis=1) <= 1e-9).mean())
    return total, stats
