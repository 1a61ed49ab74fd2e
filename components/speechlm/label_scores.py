"""The LM's logits at the label's position: right after a prompt and the label's lead-in
("Emotion: "), where the label set's tokens part.

Only the label-first format (`explain_after` + `asr`) puts the label there whatever the
model writes; other formats put the model's own writing before it. One forward pass per batch
of prompts, right-padded (positions stay 0..n-1), the LM head on each row's last position
only. The RL prompt filter reads the consensus label's sampling probability from these logits,
and the label temperature (`components.speechlm.calibration`) is fitted on them.

Rows are dicts with `utt_id`, `prompt_ids` (the chat up to the assistant's turn), `label`
(the consensus label), `label_set`, `format` and `transcript_source`.
"""
from __future__ import annotations

from typing import Callable

import torch

from components.device import to_device
from components.speechlm.formats import label_continuations, label_first, split_label_tokens

Reduce = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], list]
"""(logits [B, vocab] float, each row's label-set tokens [B, labels], each row's consensus
label's index in its label set [B]) -> one value per row."""


def lead_ins(tokenizer, rows: list[dict], needs: str,
             ) -> list[tuple[list[int], list[int], int]]:
    """Per row, (the target's tokens before the label, each label's token there in label-set
    order, the consensus label's index); the label set's tokens are found once per task.
    A row whose format does not start with the label is an error saying that `needs` it."""
    parted: dict[tuple, tuple[list[int], list[list[int]]]] = {}
    out = []
    for row in rows:
        task = (row["format"], row["transcript_source"], tuple(row["label_set"]))
        if not label_first(*task[:2]):
            raise ValueError(
                f"{needs} needs the label first in the completion (sft.format explain_after, "
                f"sft.transcript_source asr); this model writes {task[0]} / {task[1]}")
        if task not in parted:
            texts = label_continuations(task[0], task[1], task[2])
            parted[task] = split_label_tokens(tokenizer, [texts[label] for label in task[2]])
        shared, rests = parted[task]
        out.append((shared, [rest[0] for rest in rests], task[2].index(row["label"])))
    return out


def labels_are_one_token(tokenizer, label_set: list[str], fmt: str, source: str) -> bool:
    """Each label is one token after the lead-in: its logit at the label's position is its
    whole score (as `components.serve.predictor` scores it)."""
    texts = label_continuations(fmt, source, label_set)
    return all(len(rest) == 1
               for rest in split_label_tokens(tokenizer, [texts[x] for x in label_set])[1])


def score_label_position(model, tokenizer, rows: list[dict],
                         audio_for: Callable[[list[str]], dict], device: torch.device,
                         reduce: Reduce, needs: str, batch_size: int = 8) -> list:
    """`reduce`'s value for each row, from the logits of the token after its prompt and the
    label's lead-in; `audio_for`: utt_ids -> the model's audio inputs; `needs`: what asked
    (named in the error for a format without the label first). The model is put in eval mode
    for the pass and back as it was."""
    parts = lead_ins(tokenizer, rows, needs)  # a format it cannot read fails before any work
    out: list = []
    model.to(device)
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(rows), batch_size):
            chunk, chunk_parts = rows[start:start + batch_size], parts[start:start + batch_size]
            token_rows = [list(row["prompt_ids"]) + shared
                          for row, (shared, _, _) in zip(chunk, chunk_parts)]
            width = max(map(len, token_rows))
            ids = torch.full((len(chunk), width), tokenizer.pad_token_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for i, tokens in enumerate(token_rows):
                ids[i, :len(tokens)] = torch.tensor(tokens)
                mask[i, :len(tokens)] = 1
            audio = to_device(audio_for([row["utt_id"] for row in chunk]), device)
            rows_at = torch.arange(len(chunk), device=device)
            with torch.no_grad():
                hidden = model.model(input_ids=ids.to(device), attention_mask=mask.to(device),
                                     **audio).last_hidden_state
                logits = model.lm_head(hidden[rows_at, mask.sum(1).to(device) - 1]).float()
            tokens = torch.tensor([p[1] for p in chunk_parts], device=device)
            gold = torch.tensor([p[2] for p in chunk_parts], device=device)
            out += reduce(logits, tokens, gold)
    finally:
        model.train(was_training)
    return out
