"""GRPO-PTR's reward functions, in TRL's reward-function form, registered by name.

TRL's GRPOTrainer calls each function as `fn(prompts=..., completions=..., completion_ids=...,
trainer_state=..., **columns)`, where `columns` holds every dataset column as a list (one
entry per completion), and expects one float (or None: not applicable) per completion. A
completion is a string, or for conversational data a list of messages
(`[{"role": "assistant", "content": ...}]`). Whatever the model wrote, a reward is a number:
malformed, empty, non-text or over-long (`MAX_COMPLETION_CHARS`) completions score 0.0 and
never raise. Outcome and reasoning are read from well-formed outputs only (`parse_output`'s
`well_formed`), so that skipping the format never pays.

Dataset columns the RL stage provides per clip (`REQUIRED_COLUMNS` says which reward reads
which):
- `label`: the consensus label (str);
- `annotator_labels`: the labels annotators chose (list[str], may be empty);
- `label_set`: the labels the model chooses from (list[str]);
- `format`: the target format, "explain_after" | "reason_first";
- `transcript_source`: "asr" | "model" (with "model" a well-formed output has a transcript);
- `cues`: the clip's `ClipCues` as JSON (`cues_to_json`; read back with `cues_from_json`),
  what the reasoning scorer checks the rationale against.

The total reward is not made here: `components.rl.ptr.combine` weights these per-function
rewards, with the trust weight and the progressive schedule on the reasoning term.
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import math
from collections.abc import Callable
from functools import partial

from components.config import RLConfig
from components.distill.records import ClipCues
from components.rl.reasoning import GroundedScorer, ReasoningScorer, build_scorer
from components.speechlm.formats import parse_output

_PARSE_COLUMNS = ("format", "label_set", "transcript_source")
REQUIRED_COLUMNS = {
    "format": _PARSE_COLUMNS,
    "outcome": (*_PARSE_COLUMNS, "label"),
    "outcome_annotator_aware": (*_PARSE_COLUMNS, "label", "annotator_labels"),
    "reasoning": (*_PARSE_COLUMNS, "cues"),
}


def cues_to_json(cues: ClipCues) -> str:
    """The `cues` column of one clip."""
    return json.dumps(dataclasses.asdict(cues), sort_keys=True)


def cues_from_json(text: str) -> ClipCues:
    """A clip's cues from its `cues` column (`cues_to_json`)."""
    data = json.loads(text)
    return ClipCues(**{**data, "label_set": tuple(data["label_set"]),
                       "minority": tuple(data.get("minority", ()))})


MAX_COMPLETION_CHARS = 10_000
"""Longer completions score 0: far more than `rl.max_new_tokens` can produce, and reading
pathological text (thousands of unclosed tags) costs time quadratic in its length."""


def completion_text(completion: object) -> str:
    """The text of one completion: a string, or the assistant messages' content of a
    conversational completion (string content or text parts); "" for anything else and for
    text over `MAX_COMPLETION_CHARS`."""
    if isinstance(completion, str):
        return completion if len(completion) <= MAX_COMPLETION_CHARS else ""
    if not isinstance(completion, (list, tuple)):
        return ""
    parts = []
    for message in completion:
        if not isinstance(message, dict) or message.get("role", "assistant") != "assistant":
            continue
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, (list, tuple)):
            parts.extend(p["text"] for p in content
                         if isinstance(p, dict) and isinstance(p.get("text"), str))
    return completion_text("".join(parts))


def _columns(name: str, n: int, columns: dict) -> dict[str, list]:
    """The columns reward `name` reads, checked: present and one entry per completion."""
    missing = [c for c in REQUIRED_COLUMNS[name] if c not in columns]
    if missing:
        raise ValueError(f"reward {name!r} needs the dataset columns {missing}")
    out = {c: list(columns[c]) for c in REQUIRED_COLUMNS[name]}
    wrong = [c for c, values in out.items() if len(values) != n]
    if wrong:
        raise ValueError(f"reward {name!r}: columns {wrong} do not have one entry per "
                         f"completion ({n})")
    return out


def _parsed(completions: list, cols: dict[str, list]) -> list[dict]:
    """`parse_output` per completion, in its row's format (a transcript required when the
    model writes it)."""
    return [parse_output(completion_text(c), fmt, list(labels),
                         require_transcript=source == "model")
            for c, fmt, labels, source in zip(completions, cols["format"], cols["label_set"],
                                              cols["transcript_source"])]


def _answer(p: dict) -> str | None:
    """The label of a well-formed output, else None: the parser's fallback for unstructured
    text (the first label word anywhere) would pay for skipping the format."""
    return p["label"] if p["well_formed"] else None


def format_reward(prompts, completions, **columns) -> list[float]:
    """R_f: 1.0 when the output has the configured format's structure (`parse_output`'s
    well_formed: keys or tags in order, a rationale, a label naming one of the set, and a
    transcript when the model writes it), else 0.0."""
    cols = _columns("format", len(completions), columns)
    return [float(p["well_formed"]) for p in _parsed(completions, cols)]


def outcome_reward(prompts, completions, **columns) -> list[float]:
    """R_o: 1.0 when a well-formed output's label is the consensus label, else 0.0."""
    cols = _columns("outcome", len(completions), columns)
    return [float(_answer(p) is not None and _answer(p) == label)
            for p, label in zip(_parsed(completions, cols), cols["label"])]


def outcome_annotator_aware_reward(prompts, completions, partial_credit: float = 0.5,
                                   **columns) -> list[float]:
    """R_o with partial credit, for a well-formed output: 1.0 for the consensus label,
    `partial_credit` for a label some annotator chose, else 0.0 (the split of
    `ptr.trust_weights` counts only 1.0 as correct)."""
    cols = _columns("outcome_annotator_aware", len(completions), columns)
    out = []
    for p, label, chosen in zip(_parsed(completions, cols), cols["label"],
                                cols["annotator_labels"]):
        said = _answer(p)
        if said is not None and said == label:
            out.append(1.0)
        elif said is not None and said in list(chosen if chosen is not None else ()):
            out.append(float(partial_credit))
        else:
            out.append(0.0)
    return out


def reasoning_reward(prompts, completions, scorer: ReasoningScorer | None = None,
                     **columns) -> list[float]:
    """R_t in [0, 1]: the rationale of a well-formed output, scored by `scorer` (default:
    the grounded scorer) against the clip's cues, with the label the output gives. A
    malformed output, or cues that cannot be read, score 0.0. One `scorer.score` call per
    batch."""
    cols = _columns("reasoning", len(completions), columns)
    todo, items = [], []
    for i, (p, cues) in enumerate(zip(_parsed(completions, cols), cols["cues"])):
        if not p["well_formed"]:
            continue
        try:
            clip = cues_from_json(cues)
        except (TypeError, ValueError, KeyError):
            continue
        todo.append(i)
        items.append((clip, p["label"], p["rationale"]))
    out = [0.0] * len(completions)
    if items:
        scorer = scorer if scorer is not None else GroundedScorer()
        for i, value in zip(todo, scorer.score(items)):
            value = float(value)
            out[i] = min(1.0, max(0.0, value)) if math.isfinite(value) else 0.0
    return out


REWARDS: dict[str, Callable[..., list[float]]] = {
    "format": format_reward,
    "outcome": outcome_reward,
    "outcome_annotator_aware": outcome_annotator_aware_reward,
    "reasoning": reasoning_reward,
}
"""Reward name (the keys of `rl.rewards`) -> TRL reward function. A key `module:function`
names a user's own reward with the same signature, imported from the project."""


def _reward_function(name: str) -> Callable[..., list[float]]:
    if name in REWARDS:
        return REWARDS[name]
    module, _, attr = name.partition(":")
    if module and attr:
        try:
            func = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"rl.rewards: cannot import {name!r}: {exc}") from exc
        if callable(func):
            return func
    raise ValueError(f"unknown reward {name!r} in rl.rewards; expected one of "
                     f"{sorted(REWARDS)} or module:function")


def build_reward_funcs(cfg: RLConfig, scorer: ReasoningScorer | None = None,
                       ) -> tuple[list[Callable], list[float], list[str]]:
    """(functions, weights, registry names) for `cfg.rewards`, in its order; `partial_credit`
    and the reasoning scorer (`scorer`, default `build_scorer(cfg)`) are bound in. TRL names a
    partial by the function it wraps, so the trainer is given the registry names."""
    found = {name: _reward_function(name) for name in cfg.rewards}
    bound = {"outcome_annotator_aware": {"partial_credit": cfg.partial_credit}}
    if "reasoning" in cfg.rewards:
        bound["reasoning"] = {"scorer": scorer if scorer is not None else build_scorer(cfg)}
    funcs = [partial(found[name], **bound.get(name, {})) for name in cfg.rewards]
    return funcs, [float(w) for w in cfg.rewards.values()], list(cfg.rewards)
