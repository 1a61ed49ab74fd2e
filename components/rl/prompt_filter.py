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

from components.device import to_device
from components.speechlm.formats import label_continuations, split_label_tokens


def gold_probabilities(model, tokenizer, rows: list[dict],
                       audio_for: Callable[[list[str]], dict], temperature: float,
                       device: torch.device, batch_size: int = 8) -> np.ndarray:
    """Per row, the probability of sampling its consensus label's token right after the
    prompt and the label's lead-in, at `temperature` over the whole vocabulary (what GRPO's
    sampling does); `audio_for`: utt_ids -> the model's audio inputs."""
    if temperature <= 0:
        raise ValueError(f"rl.temperature must be > 0, got {temperature}")
    lead_ins = _lead_ins(tokenizer, rows)  # a format it cannot read fails before any work
    out = []
    model.to(device)
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            token_rows, golds = [], []
            for row, (shared, gold) in zip(chunk, lead_ins[start:start + batch_size]):
                token_rows.append(list(row["prompt_ids"]) + shared)
                golds.append(gold)
            width = max(map(len, token_rows))
            ids = torch.full((len(chunk), width), tokenizer.pad_token_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for i, tokens in enumerate(token_rows):  # right-padded: positions stay 0..n-1
                ids[i, :len(tokens)] = torch.tensor(tokens)
                mask[i, :len(tokens)] = 1
            audio = to_device(audio_for([row["utt_id"] for row in chunk]), device)
            rows_at = torch.arange(len(chunk), device=device)
            with torch.no_grad():  # the LM head on each row's last position only
                hidden = model.model(input_ids=ids.to(device), attention_mask=mask.to(device),
                                     **audio).last_hidden_state
                logits = model.lm_head(hidden[rows_at, mask.sum(1).to(device) - 1]).float()
            p = (logits / temperature).softmax(-1)
            out += p[rows_at, torch.tensor(golds, device=device)].tolist()
    finally:
        model.train(was_training)
    return np.array(out)


def _lead_ins(tokenizer, rows: list[dict]) -> list[tuple[list[int], int]]:
    """Per row, (the target's tokens before the label, the consensus label's first token);
    the label set's tokens are found once per task."""
    parted: dict[tuple, tuple[list[int], list[list[int]]]] = {}
    out = []
    for row in rows:
        task = (row["format"], row["transcript_source"], tuple(row["label_set"]))
        if task[:2] != ("explain_after", "asr"):
            raise ValueError(
                "rl.max_uniform_group needs the label first in the completion (sft.format "
                f"explain_after, sft.transcript_source asr); this model writes {task[0]} / "
                f"{task[1]}: set rl.max_uniform_group to 1 (no filter)")
        if task not in parted:
            texts = label_continuations(task[0], task[1], task[2])
            parted[task] = split_label_tokens(tokenizer, [texts[label] for label in task[2]])
        shared, rests = parted[task]
        out.append((shared, rests[task[2].index(row["label"])][0]))
    return out


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
