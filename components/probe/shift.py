"""The concept-shift probe's arithmetic (arXiv 2505.11924).

A follow-up instruction changes the LM's last-layer hidden state h (after the final norm) at
the last prompt token; the logits are W h (W: the output embedding, no bias), so
W (h_with - h_without) is exactly the change of every token's logit. Hand-written because no
library reads a hidden-state shift through the unembedding this way; the rest (tests,
tokenisation) is scipy's and the tokenizer's.

"Without" the instruction is the same chat with the control follow-up (a turn that asks for
nothing), so both contexts end on the same assistant header and the shift is the
instruction's alone. Raw logit changes are not comparable across emotions (word frequency,
token count), so the probe reports contrasts (one emotion against the others), z-scores
against random token sets of the same size, and paired opposite instructions.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.stats import wilcoxon

from components.distill.lexicon import label_forms
from components.serve.predictor import left_pad, padded_positions


def emotion_token_ids(tokenizer, labels: list[str]) -> dict[str, list[int]]:
    """Emotion -> the tokens of its word forms (as the label, with and without a leading
    space, capitalised or not) that are one token each: a whole word's logit. Only for an
    emotion with no such form, the first tokens of its forms that hold three letters or
    more ("ang"), never a bare letter or an article ("H", " an") that many words share.
    Tokens shared by two emotions are left out of both."""
    sets = {}
    for label in labels:
        whole, first = set(), set()
        for word in label_forms(label):
            for variant in (word, f" {word}", word.capitalize(), f" {word.capitalize()}"):
                pieces = tokenizer(variant, add_special_tokens=False)["input_ids"]
                if len(pieces) == 1:
                    whole.add(pieces[0])
                elif pieces and len(tokenizer.decode(pieces[:1]).strip()) >= 3:
                    first.add(pieces[0])
        sets[label] = whole or first
    shared = {t for a in labels for b in labels if a != b for t in sets[a] & sets[b]}
    return {label: sorted(ids - shared) for label, ids in sets.items()}


@torch.no_grad()
def last_hidden(model, rows: list[list[int]], audio: dict, pad: int) -> torch.Tensor:
    """[B, H] the final-norm hidden state at each row's last token (rows left-padded, with
    the positions `generate` uses, so padding changes nothing)."""
    ids, mask = left_pad(rows, pad, model.device)
    out = model.model(input_ids=ids, attention_mask=mask, position_ids=padded_positions(mask),
                      **audio)
    return out.last_hidden_state[:, -1].float()


def logit_shift(model, shift: torch.Tensor) -> np.ndarray:
    """[B, V] the change of every token's logit caused by a hidden-state shift [B, H]."""
    weight = model.get_output_embeddings().weight
    return (shift.to(weight.dtype) @ weight.T).float().cpu().numpy()


def emotion_scores(delta: np.ndarray, token_sets: dict[str, list[int]]) -> dict[str, np.ndarray]:
    """Emotion -> [B] mean logit change over its tokens."""
    return {e: delta[:, ids].mean(axis=1) for e, ids in token_sets.items() if ids}


def contrasts(scores: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Emotion -> [B] its score minus the mean score of the other emotions."""
    names = list(scores)
    return {e: scores[e] - np.mean([scores[o] for o in names if o != e], axis=0)
            for e in names}


def random_z(mean_delta: np.ndarray, token_sets: dict[str, list[int]], candidates: np.ndarray,
             n_random: int, seed: int) -> dict[str, float]:
    """Emotion -> z-score of its tokens' mean logit change against `n_random` random sets of
    the same size drawn from `candidates` (ordinary word tokens)."""
    rng = np.random.default_rng(seed)
    out = {}
    for e, ids in token_sets.items():
        if not ids:
            continue
        draws = np.array([mean_delta[rng.choice(candidates, len(ids), replace=False)].mean()
                          for _ in range(n_random)])
        spread = draws.std(ddof=1)
        out[e] = float((mean_delta[ids].mean() - draws.mean()) / spread) if spread > 0 else 0.0
    return out


def candidate_tokens(tokenizer) -> np.ndarray:
    """Token ids that decode to a plain word piece (letters, optionally a leading space):
    what random sets are drawn from, so they are like emotion words, not bytes or markup."""
    keep = []
    for i in range(len(tokenizer)):
        text = tokenizer.decode([i])
        word = text[1:] if text.startswith(" ") else text
        if word.isalpha() and word.isascii() and i not in tokenizer.all_special_ids:
            keep.append(i)
    return np.array(keep)


def top_tokens(tokenizer, mean_delta: np.ndarray, k: int) -> dict[str, list[list]]:
    """The k tokens whose logits rose most and the k that fell most: [token text, change]."""
    order = np.argsort(mean_delta)
    return {"up": [[tokenizer.decode([int(i)]), float(mean_delta[i])] for i in order[::-1][:k]],
            "down": [[tokenizer.decode([int(i)]), float(mean_delta[i])] for i in order[:k]]}


def paired_test(a: np.ndarray, b: np.ndarray, n_boot: int = 2000, seed: int = 0) -> dict:
    """a - b per clip: mean, 95% bootstrap interval, share of clips above 0 and the Wilcoxon
    signed-rank p-value (two-sided; 1.0 when every difference is 0)."""
    diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(n_boot, len(diff)))].mean(axis=1)
    p = float(wilcoxon(diff).pvalue) if np.any(diff != 0) else 1.0
    return {"mean": float(diff.mean()), "ci": [float(np.percentile(means, 2.5)),
                                               float(np.percentile(means, 97.5))],
            "share_positive": float((diff > 0).mean()), "wilcoxon_p": p, "n": int(len(diff))}
