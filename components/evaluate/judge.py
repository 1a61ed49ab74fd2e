"""An LLM judge of rationales on EmotionThinker's four criteria, behind any OpenAI-compatible
chat endpoint (vLLM, Ollama, a hosted API), when `evaluate.judge.enabled`.

The judge sees what the model heard (transcript, measured cues) and what it wrote (label,
rationale), and answers one JSON object with a 1-5 score per criterion. Requests go through
the distill stage's HTTP client (concurrency, timeouts, retries with backoff, no key over
plain http to a remote host unless `evaluate.judge.allow_insecure_http`); an answer that is
not such an object counts as a failure, never as a score.
"""
from __future__ import annotations

import json
import math
import re

import numpy as np

from components.config import JudgeConfig, TeacherConfig
from components.distill.records import ClipCues, TeacherRequest

CRITERIA = ("factual_alignment", "interpretive_quality", "completeness", "fluency")
SYSTEM = (
    "You grade explanations of speech emotion recognition. Score each criterion from 1 "
    "(poor) to 5 (excellent):\n"
    "- factual_alignment: the claims about pitch, loudness, rate, pauses and intonation "
    "agree with the measured cues;\n"
    "- interpretive_quality: the cues and the words are interpreted plausibly as evidence "
    "for the emotion;\n"
    "- completeness: the salient cues (the words and the clearly high or low levels) are "
    "covered;\n"
    "- fluency: the rationale is clear, well structured and free of repetition.\n"
    'Answer with one JSON object only, e.g. {"factual_alignment": 4, '
    '"interpretive_quality": 3, "completeness": 4, "fluency": 5}.'
)
_OBJECT = re.compile(r"\{[^{}]*\}", re.DOTALL)


def judge_messages(cues: ClipCues, label: str | None, rationale: str) -> tuple[dict, ...]:
    measured = ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in cues.levels.items())
    user = (f"Transcript: {cues.transcript or '(none)'}\nMeasured cues: {measured}\n"
            f"Predicted emotion: {label or '(none)'}\nRationale: {rationale}")
    return ({"role": "system", "content": SYSTEM}, {"role": "user", "content": user})


def parse_scores(text: str | None) -> dict[str, float] | None:
    """The four scores of the first JSON object in `text` that has them all within 1-5."""
    for match in _OBJECT.finditer(text or ""):
        try:
            found = json.loads(match.group(0))
        except json.JSONDecodeError:
            continue
        try:
            scores = {k: float(found[k]) for k in CRITERIA}
        except (KeyError, TypeError, ValueError):
            continue
        if all(1.0 <= v <= 5.0 for v in scores.values()):
            return scores
    return None


def _teacher_config(cfg: JudgeConfig) -> TeacherConfig:
    return TeacherConfig(openai_base_url=cfg.base_url, openai_model=cfg.model,
                         openai_api_key_env=cfg.api_key_env,
                         openai_concurrency=cfg.concurrency, openai_timeout_s=cfg.timeout_s,
                         openai_max_retries=cfg.max_retries, max_new_tokens=cfg.max_new_tokens,
                         temperature=0.0, top_p=1.0, allow_insecure_http=cfg.allow_insecure_http)


def judge_rationales(cfg: JudgeConfig, items: list[tuple[ClipCues, str | None, str]],
                     seed: int = 0) -> list[dict[str, float] | None]:
    """Scores per (cues, predicted label, rationale); None where the judge gave none."""
    from components.distill.backends.openai_chat import OpenAIChatTeacher

    judge = OpenAIChatTeacher(_teacher_config(cfg), seed=seed, section="evaluate.judge")
    requests = [TeacherRequest(utt_id=cues.utt_id, messages=judge_messages(cues, label, text),
                               cues=cues) for cues, label, text in items]
    return [None if reply.error else parse_scores(reply.text)
            for reply in judge.generate(requests)]


def judge_metrics(scores: list[dict[str, float] | None], n_boot: int, seed: int,
                  ) -> tuple[dict[str, float], dict[str, list[float]]]:
    """(mean score per criterion, `judge_score` = their mean / 5, `judge_failed` share;
    95% bootstrap intervals over the judged clips)."""
    from components.evaluate.metrics import percentile_ci, resample_indices

    if not scores:
        return {}, {}
    ok = np.array([[s[k] for k in CRITERIA] for s in scores if s is not None], dtype=float)
    values = {"judge_failed": 1 - len(ok) / len(scores)}
    if not len(ok):
        return {**values, "judge_score": math.nan}, {}
    columns = {f"judge_{k}": ok[:, i] for i, k in enumerate(CRITERIA)}
    columns["judge_score"] = ok.mean(1) / 5
    idx = resample_indices(len(ok), n_boot, seed)
    values.update({k: float(v.mean()) for k, v in columns.items()})
    cis = {k: percentile_ci(v[idx].mean(1), 0.05) for k, v in columns.items()}
    return values, cis
