"""Decoding that cannot loop: a token is banned when the n-gram it would complete already
occurs `max_repeats` times in the text generated so far.

Written here because transformers' `no_repeat_ngram_size` counts the prompt as well, allows
no repeat at all, and tells " the" from "The": it would forbid the rationale to copy the
caption's measured levels ("rate normal"), and it would let "The voice is ... the voice is"
run on. This block counts the completion only, and compares tokens by their word (`word_ids`:
case and leading space ignored), as the evaluate stage's loop count compares words
(`components.evaluate.rationale_quality.loops`): with n = 3 and `max_repeats` = 2 no run of
three words occurs three times, unless punctuation splits it (punctuation is a word here, and
the loop count ignores it).
"""
from __future__ import annotations

from collections import Counter

import torch
from transformers import LogitsProcessor


def word_ids(tokenizer) -> torch.Tensor:
    """[vocab] id of each token's word: tokens that decode to the same text up to case and
    surrounding spaces ("The", " the", "the") share one id."""
    words: dict[str, int] = {}
    texts = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    return torch.tensor([words.setdefault(
        tokenizer.convert_tokens_to_string([t]).strip().lower() if t is not None else f"<{i}>",
        len(words)) for i, t in enumerate(texts)])


class RepeatBlock(LogitsProcessor):
    """Bans, per row, every token that would complete an n-gram of the completion (the tokens
    after the first `prompt_len`) that is already there `max_repeats` times; tokens are
    compared by `words` ([vocab] ids, see `word_ids`), or as they are when None."""

    def __init__(self, ngram: int, max_repeats: int, prompt_len: int,
                 words: torch.Tensor | None = None):
        if ngram < 1 or max_repeats < 1:
            raise ValueError(f"a repeat block needs ngram >= 1 and max_repeats >= 1, "
                             f"got {ngram} and {max_repeats}")
        self.ngram, self.max_repeats, self.prompt_len = ngram, max_repeats, prompt_len
        self.words = words
        """[vocab] word id per token; ids past its end (a model's padded vocabulary) are words
        of their own."""
        self._padded: torch.Tensor | None = None

    def banned(self, completion: list[int]) -> list[int]:
        """The ids that may not follow `completion`: word ids when `completion` is given as
        word ids, token ids when it is given as token ids."""
        n = self.ngram
        if len(completion) < n - 1:
            return []
        counts = Counter(tuple(completion[i:i + n]) for i in range(len(completion) - n + 1))
        head = tuple(completion[len(completion) - n + 1:]) if n > 1 else ()
        return [gram[-1] for gram, count in counts.items()
                if count >= self.max_repeats and gram[:-1] == head]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor
                 ) -> torch.FloatTensor:
        completion = input_ids[:, self.prompt_len:]
        words = self._words(scores.shape[1], scores.device)
        if words is not None:
            completion = words[completion]
        for row, ids in enumerate(completion.tolist()):
            banned = self.banned(ids)
            if banned and words is None:
                scores[row, banned] = -float("inf")
            elif banned:
                scores[row, torch.isin(words, torch.tensor(banned, device=words.device))] = \
                    -float("inf")
        return scores

    def _words(self, vocab: int, device: torch.device) -> torch.Tensor | None:
        """`words` widened to the scores' `vocab` on `device`, built at the first step only."""
        if self.words is None:
            return None
        if self._padded is None or len(self._padded) != vocab:
            words = self.words.to(device)
            extra = vocab - len(words)
            if extra > 0:
                words = torch.cat([words, int(words.max()) + 1 +
                                   torch.arange(extra, device=device)])
            self._padded = words[:vocab]
        return self._padded
