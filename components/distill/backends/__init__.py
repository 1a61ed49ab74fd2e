"""Teacher backends: what writes a rationale from a clip's prompt, behind one small interface.

A backend is built by name with `make_backend`; the registry imports each module only when its
backend is asked for, so using the HTTP teacher never loads torch and vice versa.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Protocol, runtime_checkable

from components.config import TeacherConfig
from components.distill.records import TeacherReply, TeacherRequest


@runtime_checkable
class TeacherBackend(Protocol):
    """What the distill stage and the generation cache rely on."""

    name: str

    def config(self) -> dict:
        """Everything that changes the outputs (part of every cache key); never a secret."""
        ...

    def generate(self, requests: list[TeacherRequest]) -> list[TeacherReply]:
        """One reply per request, in order; a failed item is a reply with `error` set."""
        ...


@dataclass
class TeacherStats:
    """Counters a backend keeps across `generate` calls, for the stage to log."""

    n_requests: int = 0
    n_failed: int = 0
    n_retries: int = 0
    n_truncated: int = 0
    """Replies cut off by the token limit rather than ended by the model."""
    latency_s: float = 0.0
    """Summed per-request time (HTTP: including retries and backoff; local: batch time)."""

    def as_dict(self) -> dict:
        return asdict(self)


def _openai(cfg: TeacherConfig, seed: int) -> TeacherBackend:
    from components.distill.backends.openai_chat import OpenAIChatTeacher
    return OpenAIChatTeacher(cfg, seed)


def _hf(cfg: TeacherConfig, seed: int) -> TeacherBackend:
    from components.distill.backends.hf_local import HFLocalTeacher
    return HFLocalTeacher(cfg, seed)


def _template(cfg: TeacherConfig, seed: int) -> TeacherBackend:
    from components.distill.template import TemplateTeacher
    return TemplateTeacher()  # deterministic: reads the cues, needs no settings


BACKENDS: dict[str, Callable[[TeacherConfig, int], TeacherBackend]] = {
    "openai": _openai, "hf": _hf, "template": _template,
}


def make_backend(name: str, cfg: TeacherConfig, seed: int) -> TeacherBackend:
    """The backend called `name`; a misconfiguration raises here, not during generation."""
    if name not in BACKENDS:
        raise ValueError(f"unknown teacher backend {name!r}; known: {', '.join(BACKENDS)}")
    return BACKENDS[name](cfg, seed)


def request_seed(seed: int, requests: list[TeacherRequest]) -> int:
    """A 31-bit seed from the run seed and what is asked, so that the same requests sample the
    same way on a rerun while a retry with a hint (different messages) or a new STaR
    iteration (`draw`) draws afresh."""
    payload = json.dumps([seed] + [[r.utt_id, list(r.messages), r.draw] for r in requests],
                         sort_keys=True, default=str)
    return int.from_bytes(hashlib.sha256(payload.encode()).digest()[:4], "big") & 0x7FFFFFFF
