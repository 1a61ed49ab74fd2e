"""Decoding that keeps a rationale's cue claims true to the clip's measured levels.

The model reads the measured levels in its prompt (the prosody caption) and mostly copies
them, but where a clip measures "normal" it sometimes writes what the label suggests ("the
delivery is loud" for an angry clip of normal energy). The served answer returns those
measured levels beside the rationale, so such a claim contradicts the answer it comes with.
This logits processor checks the few most likely next tokens of each row, reads the text they
would complete with the distill verifier's own rules (`acoustic_claims`, `grounding`), and
bans a token that would add a claim that does not agree with the measurement; the next most
likely token is then checked. Written here because no decoding library knows what a claim
about a voice is; the reading rules are the ones the evaluate stage scores with, so the guard
cannot disagree with the score.
"""
from __future__ import annotations

import math

import torch
from transformers import LogitsProcessor

from components.distill.records import LEVEL_FIELDS, ClipCues
from components.distill.verify import acoustic_claims, grounding

CANDIDATES = 8
"""Most likely tokens checked per row and step; past them the step is left as it is."""


def clip_levels(cues: dict) -> ClipCues:
    """The measured levels of a prediction's `cues` as the verifier reads them."""
    levels = {k: str(cues[k]) for k in LEVEL_FIELDS if cues.get(k)}
    return ClipCues(utt_id="", transcript="", label="", label_set=(), levels=levels)


def misgrounded(text: str, cues: ClipCues) -> int:
    """How many cue claims of `text` do not agree with the measured levels (the opposite, or
    another level, or nothing was measured)."""
    claims = acoustic_claims(text)
    if not claims:
        return 0
    return len(claims) - len(grounding(claims, cues)[1]["agree"])


class ClaimGuard(LogitsProcessor):
    """Per row, bans each of the `candidates` most likely tokens that would raise the number
    of misgrounded claims of the completion (the tokens after the first `prompt_len`), in
    order of likelihood, until one does not."""

    def __init__(self, tokenizer, cues: list[ClipCues], prompt_len: int,
                 candidates: int = CANDIDATES):
        if candidates < 1:
            raise ValueError(f"a claim guard checks at least one candidate, got {candidates}")
        self.tokenizer, self.cues, self.prompt_len = tokenizer, cues, prompt_len
        self.candidates = candidates

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor
                 ) -> torch.FloatTensor:
        if input_ids.shape[0] != len(self.cues):
            raise ValueError(f"the claim guard holds cues for {len(self.cues)} rows, "
                             f"the batch has {input_ids.shape[0]}")
        k = min(self.candidates, scores.shape[1])
        top = scores.topk(k, dim=1).indices.tolist()
        for row, (ids, cues) in enumerate(zip(input_ids[:, self.prompt_len:].tolist(),
                                              self.cues)):
            if not cues.levels:
                continue
            now = misgrounded(self.tokenizer.decode(ids, skip_special_tokens=True), cues)
            for token in top[row]:
                if math.isinf(scores[row, token].item()):
                    break  # banned already (another processor): the rest are too
                text = self.tokenizer.decode(ids + [token], skip_special_tokens=True)
                if misgrounded(text, cues) <= now:
                    break
                scores[row, token] = -math.inf
        return scores
