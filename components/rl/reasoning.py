"""The reasoning reward R_t in [0, 1]: how good a rationale is, behind one interface.

EmotionThinker scores a rationale on four criteria (factual alignment with the audio's cues,
interpretive quality, completeness, fluency), each 1-5, and uses their mean / 5. Three
scorers serve here, chosen by `rl.reasoning_scorer`:
- `grounded` (default): the criteria measured by the rules that kept the teacher's
  rationales (`components.distill.verify`), deterministic and offline;
- `judge`: an LLM judge behind an OpenAI-compatible endpoint (`components.evaluate.judge`);
- `model`: a small trained sequence-regression model loaded from a folder.

Scorers keep no global state and pickle cheaply (the model scorer pickles as its path), so
the RL stage can run one inside a Ray actor.
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Protocol

from components.config import JudgeConfig, RLConfig, VerifyConfig
from components.distill import lexicon as lx
from components.distill.records import ClipCues
from components.distill.verify import (
    acoustic_claims,
    clean_rationale,
    grounding,
    implied_label,
    leakage,
)
from components.evaluate.judge import CRITERIA, judge_messages, judge_rationales
from components.evaluate.rationale_quality import distinct_n

Item = tuple[ClipCues, str | None, str]
"""(the clip's cues, the predicted label or None, the rationale text)."""


class ReasoningScorer(Protocol):
    def score(self, items: list[Item]) -> list[float]:
        """R_t in [0, 1] per item, in order; 0 for an empty rationale."""
        ...


# ---------------------------------------------------------------- grounded

UNREMARKABLE = frozenset(("normal", "none"))
"""Measured levels that are not salient: average levels, and no pauses (most clips)."""
_SENTENCE_END = (".", "!", "?")
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)*")


def _cleaned(items: list[Item]) -> list[tuple[int, str]]:
    """(index, cleaned rationale) of the items whose rationale is not empty once cleaned."""
    out = []
    for i, (_, _, text) in enumerate(items):
        clean = clean_rationale(text if isinstance(text, str) else None)
        if clean:
            out.append((i, clean))
    return out


def _to_five(share: float) -> float:
    """A share in [0, 1] on EmotionThinker's 1-5 scale."""
    return 1.0 + 4.0 * min(1.0, max(0.0, share))


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower().replace("\u2019", "'"))


def salient_cues(cues: ClipCues) -> list[str]:
    """What a complete rationale covers: the cues measured at a clear level (not normal, not
    'no pauses'; any measured contour) and, when something was said, the words."""
    out = [cue for cue in lx.CUES
           if cues.levels.get(lx.CUE_FIELDS[cue]) in lx.CUE_VALUES[cue]
           and cues.levels[lx.CUE_FIELDS[cue]] not in UNREMARKABLE]
    return out + (["words"] if _words(cues.transcript) else [])


def _mentions_words(text: str, transcript: str) -> bool:
    """The rationale talks about what was said: a word like 'words' or 'transcript', or a
    quote (two consecutive words of the transcript; one for a one-word transcript)."""
    said, written = _words(transcript), _words(text)
    if any(w in lx.WORD_REFERENCES for w in written):
        return True
    n = min(2, len(said))
    grams = set(zip(*(written[i:] for i in range(n))))
    return any(g in grams for g in zip(*(said[i:] for i in range(n))))


class GroundedScorer:
    """R_t from measurable properties of the rationale, on EmotionThinker's four criteria.

    Each criterion is a share s in [0, 1] mapped to 1 + 4 s (1 = poor, 5 = excellent);
    R_t = mean of the four / 5, so any non-empty rationale scores at least 0.2 and an empty
    one (after `clean_rationale`) scores 0.
    - factual_alignment: share of its voice claims (`acoustic_claims`) that agree with the
      measured levels (`grounding`); no claims -> 1.
    - completeness: share of the clip's `salient_cues` the rationale covers (a claim about
      the cue, right or wrong: rightness is the first criterion's job; the words by a quote
      or a word like 'transcript'); nothing salient -> 5.
    - interpretive_quality (consistency): the emotion the rationale argues for
      (`implied_label`) is the predicted label: 5 without leakage, 3 with it (`leakage`:
      the label announced up front or an answer-style phrase); another or no emotion -> 1.
    - fluency: mean of four shares: length within the verify range (`min_words` -
      `max_words`), distinct word bigrams (`distinct_n`, low when the text loops), ends
      with a full stop, ! or ? (not cut off), and no markup (cleaning changes nothing).
    """

    def __init__(self, verify: VerifyConfig | None = None):
        self.verify = verify or VerifyConfig()

    def criteria(self, cues: ClipCues, label: str | None,
                 text: str | None) -> dict[str, float] | None:
        """The four 1-5 scores (keys `components.evaluate.judge.CRITERIA`), or None for an
        empty rationale."""
        clean = clean_rationale(text if isinstance(text, str) else None)
        if not clean:
            return None
        claims = acoustic_claims(clean)
        share_agree = grounding(claims, cues)[0]
        salient = salient_cues(cues)
        claimed = {c.cue for c in claims}
        covered = [s for s in salient if s in claimed
                   or (s == "words" and _mentions_words(clean, cues.transcript))]
        consistent = label is not None and implied_label(clean, cues.label_set)[0] == label
        leaks = bool(leakage(clean, label, self.verify.lead_words))
        n_words = len(clean.split())
        distinct = distinct_n([clean], 2)
        fluency = (float(self.verify.min_words <= n_words <= self.verify.max_words)
                   + (distinct if math.isfinite(distinct) else 0.0)
                   + float(clean.endswith(_SENTENCE_END))
                   + float(" ".join(text.split()) == clean)) / 4
        return {
            "factual_alignment": _to_five(share_agree),
            "interpretive_quality": _to_five((1.0 if not leaks else 0.5) if consistent else 0.0),
            "completeness": _to_five(len(covered) / len(salient) if salient else 1.0),
            "fluency": _to_five(fluency),
        }

    def score(self, items: list[Item]) -> list[float]:
        out = []
        for cues, label, text in items:
            scores = self.criteria(cues, label, text)
            out.append(0.0 if scores is None else sum(scores.values()) / len(CRITERIA) / 5)
        return out


# ---------------------------------------------------------------- judge

class JudgeScorer:
    """R_t = the LLM judge's mean score / 5; a failed or unreadable answer scores 0, and an
    empty rationale is not sent. A misconfigured endpoint (bad URL, no key for a remote host,
    a key over plain http) fails when the scorer is built, not at every step."""

    def __init__(self, cfg: JudgeConfig, seed: int = 0):
        self.cfg, self.seed = cfg, seed
        judge_rationales(cfg, [], seed=seed)  # builds the client: checks the configuration

    def score(self, items: list[Item]) -> list[float]:
        out = [0.0] * len(items)
        todo = _cleaned(items)
        sent = [(items[i][0], items[i][1], clean) for i, clean in todo]
        for (i, _), scores in zip(todo, judge_rationales(self.cfg, sent, seed=self.seed)):
            if scores is not None:
                out[i] = sum(scores.values()) / len(CRITERIA) / 5
        return out


# ---------------------------------------------------------------- trained model

def scorer_text(cues: ClipCues, label: str | None, rationale: str) -> str:
    """The trained scorer's input: the judge's view of the clip (transcript, measured cues,
    predicted emotion, rationale), so judge scores can serve as its training targets."""
    return judge_messages(cues, label, rationale)[-1]["content"]


class ModelScorer:
    """R_t = sigmoid of a sequence-regression model's output (transformers
    `AutoModelForSequenceClassification`, num_labels=1) over `scorer_text`, on the CPU in
    eval mode (deterministic). It pickles as its path and reloads on the other side."""

    def __init__(self, path: str | Path, batch_size: int = 16, max_length: int = 512):
        self.path, self.batch_size, self.max_length = str(path), batch_size, max_length
        if not Path(self.path).is_dir():
            raise ValueError(f"rl.reasoning_model: no scorer model folder at {self.path}")
        self._load()

    def _load(self) -> None:
        from transformers import (
            AutoConfig,
            AutoModelForSequenceClassification,
            AutoTokenizer,
        )

        config = AutoConfig.from_pretrained(self.path)
        if config.num_labels != 1:
            raise ValueError(f"the scorer at {self.path} has {config.num_labels} outputs; a "
                             "reasoning scorer regresses one (num_labels=1)")
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForSequenceClassification.from_pretrained(self.path).eval()
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id

    def __getstate__(self) -> dict:
        return {"path": self.path, "batch_size": self.batch_size, "max_length": self.max_length}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._load()

    def score(self, items: list[Item]) -> list[float]:
        import torch

        out = [0.0] * len(items)
        todo = _cleaned(items)
        texts = [scorer_text(items[i][0], items[i][1], clean) for i, clean in todo]
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(texts[start:start + self.batch_size], return_tensors="pt",
                                   padding=True, truncation=True, max_length=self.max_length)
            with torch.inference_mode():
                values = torch.sigmoid(self.model(**batch).logits[:, 0].float()).tolist()
            for (i, _), value in zip(todo[start:start + self.batch_size], values):
                out[i] = value
        return out


SCORERS = ("grounded", "judge", "model")


def build_scorer(cfg: RLConfig, verify: VerifyConfig | None = None,
                 seed: int = 0) -> ReasoningScorer:
    """The scorer named by `cfg.reasoning_scorer`. `verify`: the length range and lead words
    of the grounded scorer (the distill stage's `distill.verify`; default VerifyConfig())."""
    if cfg.reasoning_scorer == "grounded":
        return GroundedScorer(verify)
    if cfg.reasoning_scorer == "judge":
        return JudgeScorer(cfg.judge, seed=seed)
    if cfg.reasoning_scorer == "model":
        if not cfg.reasoning_model:
            raise ValueError("rl.reasoning_scorer 'model' needs rl.reasoning_model (a folder)")
        return ModelScorer(cfg.reasoning_model)
    raise ValueError(f"unknown rl.reasoning_scorer {cfg.reasoning_scorer!r}; "
                     f"expected one of {SCORERS}")
