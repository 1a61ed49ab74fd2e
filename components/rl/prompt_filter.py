"""Leave out the RL prompts whose completion groups would teach the label nothing.

GRPO's advantage is a completion's reward minus its group's mean, so a group whose G
completions all get the same outcome reward (all right, or all wrong) carries no outcome
signal; on the RAVDESS folds 70% of the groups were such. DAPO (Yu et al., 2025) resamples
those groups during training; here the SFT model says beforehand which clips will give them,
from one scoring pass over the prompts: with p the probability of sampling the consensus
label at the RL temperature, a group is uniform with probability p^G + (1 - p)^G. Clips above
`rl.max_uniform_group` are left out (at least `rl.prompts_per_step` clips stay, the least
uniform). Uniform groups still carry the reasoning reward's signal: the filter trades
rationale updates on confident clips for label updates on unsure ones. TRL's GRPOTrainer has no prompt filter, and its audio rows need the
audio source, so it is written here.

Exact for the label-first format with ASR transcripts (`explain_after` + `asr`: the label
follows "Emotion: " right after the prompt); other formats put the model's own writing
before the label and are refused.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from components.speechlm.label_scores import score_label_position


def gold_probabilities(model, tokenizer, rows: list[dict],
                       audio_for: Callable[[list[str]], dict], temperature: float,
                       device: torch.device, batch_size: int = 8) -> np.ndarray:
    """Per row, the probability of sampling its consensus label's token right after the
    prompt and the label's lead-in, at `temperature` over the whole vocabulary (what GRPO's
    sampling does); `audio_for`: utt_ids -> the model's audio inputs."""
    if temperature <= 0:
        raise ValueError(f"rl.temperature must be > 0, got {temperature}")

    def sampled(logits: torch.Tensor, tokens: torch.Tensor, gold: torch.Tensor) -> list:
        gold_token = tokens.gather(1, gold[:, None])
        return (logits / temperature).softmax(-1).gather(1, gold_token).squeeze(1).tolist()

    return np.array(score_label_position(
        model, tokenizer, rows, audio_for, device, sampled,
        needs="rl.max_uniform_group < 1", batch_size=batch_size))


def uniform_group_probability(p_gold: np.ndarray, group_size: int) -> np.ndarray:
    """Probability that G sampled completions all get the same outcome reward."""
    p = np.asarray(p_gold, dtype=float)
    return p ** group_size + (1.0 - p) ** group_size


def informative(uniform: np.ndarray, max_uniform: float, keep_at_least: int) -> list[int]:
    """Indices, in order, of the rows whose group is uniform with probability <=
    `max_uniform`; at least the `keep_at_least` least uniform ones."""
    uniform = np.asarray(uniform, dtype=float)
    keep = set(np.flatnonzero(uniform <= max_uniform).tolist())
    if len(keep) < keep_at_least:
        keep |= set(np.argsort(uniform, kind="stable")[:keep_at_least].tolist())
    return sorted(keep)
