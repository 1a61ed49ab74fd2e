"""The evidence token: the clip's emotion probabilities, written in the LM's own words.

Reading eight emotions off a few dozen soft frame tokens is a lot to learn for a small LM in a
CPU budget: measured on unseen RAVDESS actors, the SFT model's label was far below its own
warmed-up encoder's (UA 0.21 vs 0.48). The evidence token hands it what the classifiers
know, as one more soft token: the probability-weighted mean of the label words' input
embeddings, with the probabilities the average of
- the encoder warm-up's emotion head over the clip embedding (pooled frames + prosody token),
- and, with a prosody token, the class-balanced logistic regression on the speaker-normalised
  eGeMAPS vector (`components.classical`, the `egemaps_lr_speaker` baseline's model), its
  scaler folded into one linear layer so the model folder holds it as weights.
The LM still chooses the label, and writes the rationale, from everything it reads; the token
is a fair ensemble only when reported as one (`sft.evidence_token`).

Level evidence tokens (`sft.level_evidence`) are the same module over a perception task's level
words ("slow", "normal", "fast"): the warm-up's level head and an eGeMAPS regression on the
level. On unseen RAVDESS actors the LM answered rate and intonation questions below the best
constant answer while those heads were above it: the LM did not read them off the frames.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from components.speechlm.encoders import clip_vector

ABSENT_LOGIT = -30.0
"""Logit of a label the logistic regression never saw in train (probability ~0)."""


def off_the_random_stream(build: Callable[[], nn.Module]) -> nn.Module:
    """`build()` without drawing from the global random stream, its modules marked initialised.

    The evidence tokens' classifiers are overwritten by fitted ones before use, so their
    initial weights do not matter; drawing them (in their constructors and again in
    `post_init`) would re-seed every module initialised after them: adding a token changed
    the warm-up heads and LoRA, and an ablation measured the lever and a new seed at once
    (the `encoder` row moved by 0.022 UA on RAVDESS).
    """
    with torch.random.fork_rng(devices=[]):
        module = build()
    for sub in module.modules():
        sub._is_hf_initialized = True  # transformers' post_init skips it
    return module


class EvidenceToken(nn.Module):
    """Emotion probabilities of a clip -> one soft token in the LM's embedding space."""

    def __init__(self, clip_dim: int, prosody_dim: int, n_labels: int, hidden: int,
                 power: float = 1.0):
        super().__init__()
        self.power = power  # sharpening of the probabilities in the token (not in `probabilities`)
        self.head = nn.Linear(clip_dim, n_labels)
        self.prosody_classifier = nn.Linear(prosody_dim, n_labels) if prosody_dim else None
        self.register_buffer("label_embeddings", torch.zeros(n_labels, hidden))
        self.requires_grad_(False)

    def probabilities(self, frames: torch.Tensor, frame_mask: torch.Tensor,
                      prosody_token: torch.Tensor | None,
                      prosody_values: torch.Tensor | None) -> torch.Tensor:
        """[B, labels]: the mean of the head's and the prosody classifier's probabilities."""
        clip = clip_vector(frames, frame_mask, prosody_token)
        probs = self.head(clip.to(self.head.weight.dtype)).softmax(-1)
        if self.prosody_classifier is not None and prosody_values is not None:
            lr = self.prosody_classifier(prosody_values.to(self.head.weight.dtype)).softmax(-1)
            probs = (probs + lr) / 2
        return probs

    def forward(self, frames, frame_mask, prosody_token, prosody_values) -> torch.Tensor:
        """[B, hidden]."""
        probs = self.probabilities(frames, frame_mask, prosody_token, prosody_values)
        if self.power != 1.0:
            probs = probs.pow(self.power)
            probs = probs / probs.sum(-1, keepdim=True)
        return probs @ self.label_embeddings.to(probs.dtype)


@torch.no_grad()
def set_label_embeddings(evidence: EvidenceToken, input_embeddings: nn.Embedding, tokenizer,
                         labels: list[str]) -> None:
    """Row i: the mean input embedding of label i's tokens as the answer writes it (" angry")."""
    for i, label in enumerate(labels):
        ids = tokenizer(" " + label, add_special_tokens=False)["input_ids"]
        evidence.label_embeddings[i] = input_embeddings.weight[ids].mean(0).to(
            evidence.label_embeddings.dtype)


@torch.no_grad()
def set_prosody_classifier(evidence: EvidenceToken, pipeline, labels: list[str]) -> None:
    """Copy a fitted imputer + scaler + logistic-regression pipeline (`fit_balanced_lr`, on
    finite vectors: the imputer is then the identity) into the linear layer:
    W = coef / scale, b = intercept - W @ mean; labels absent from train get `ABSENT_LOGIT`."""
    if evidence.prosody_classifier is None:
        raise ValueError("this evidence token has no prosody classifier (the model has no prosody token)")
    scaler, lr = pipeline[-2], pipeline[-1]
    coef = lr.coef_ / scaler.scale_[None, :]
    intercept = lr.intercept_ - coef @ scaler.mean_
    if len(lr.classes_) == 2:  # sklearn keeps one row for two classes: logits (-z/2, z/2)
        coef, intercept = np.stack([-coef[0], coef[0]]) / 2, np.array([-intercept[0], intercept[0]]) / 2
    layer = evidence.prosody_classifier
    layer.weight.zero_()
    layer.bias.fill_(ABSENT_LOGIT)
    for j, name in enumerate(lr.classes_):
        layer.weight[labels.index(name)] = torch.as_tensor(coef[j], dtype=layer.weight.dtype,
                                                            device=layer.weight.device)
        layer.bias[labels.index(name)] = float(intercept[j])


@torch.no_grad()
def set_constant_classifier(evidence: EvidenceToken, labels: list[str], label: str) -> None:
    """A prosody classifier that always says `label`: what a regression fitted on train clips
    that all have one label would say (scikit-learn refuses to fit one class)."""
    layer = evidence.prosody_classifier
    layer.weight.zero_()
    layer.bias.fill_(ABSENT_LOGIT)
    layer.bias[labels.index(label)] = 0.0
