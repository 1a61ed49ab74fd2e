"""Teacher backends: what writes a rationale from a clip's prompt, behind one small interface.

A backend is built by name with `make_backend`; the registry imports each module only when its
backend is asked for, so using the HTTP teacher never loads torch and vice versa.
"""
from __future__ import annotations

from collections.abc import Callable
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


def _openai(cfg: TeacherConfig, seed: int) -> TeacherBackend:
    from components.distill.backends.openai_chat import OpenAIChatTeacher
    return OpenAIChatTeacher(cfg, seed)


def _hf(cfg: TeacherConfig, seed: int) -> TeacherBackend:
    from components.distill.backends.hf_local import HFLocalTeacher
    return HFLocalTeacher(cfg, seed)


def _template(cfg: TeacherConfig, seed: int) -> TeacherBackend:
    from components.distill.template import TemplateTeacher
    return TemplateTeacher(cfg.template_levels)  # deterministic: reads the cues


BACKENDS: dict[str, Callable[[TeacherConfig, int], TeacherBackend]] = {
    "openai": _openai, "hf": _hf, "template": _template,
}


def make_backend(name: str, cfg: TeacherConfig, seed: int) -> TeacherBackend:
    """The backend called `name`; a misconfiguration raises here, not during generation."""
    if name not in BACKENDS:
        raise ValueError(f"unknown teacher backend {name!r}; known: {', '.join(BACKENDS)}")
    return BACKENDS[name](cfg, seed)
