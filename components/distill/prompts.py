"""Versioned teacher prompts: files under `prompts/`, rendered from a clip's cues."""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import yaml

from components.distill.records import ClipCues

PROMPT_DIR = Path(__file__).parent / "prompts"
KEYS = ("version", "system", "user_with_label", "user_without_label", "minority_note",
        "retry_hint")


@dataclass(frozen=True)
class PromptSpec:
    version: str
    system: str
    user_with_label: str
    user_without_label: str
    minority_note: str
    retry_hint: str

    @property
    def digest(self) -> str:
        """Hash of the whole prompt text: part of every cache key."""
        text = "\n".join(getattr(self, k) for k in KEYS)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_prompt(version: str) -> PromptSpec:
    """The prompt file `prompts/<version>.yaml`; a clear error when missing or incomplete."""
    path = PROMPT_DIR / f"{version}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in PROMPT_DIR.glob("*.yaml"))
        raise ValueError(f"unknown prompt version {version!r}; known: {known}")
    data = yaml.safe_load(path.read_text())
    missing = [k for k in KEYS if k not in data]
    if missing:
        raise ValueError(f"{path.name}: missing {missing}")
    return PromptSpec(**{k: str(data[k]).strip() for k in KEYS})


def _fmt(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "not measured"
    return f"{value:.{digits}f}"


def render(spec: PromptSpec, cues: ClipCues, with_label: bool = True,
           hint: str | None = None) -> tuple[dict, ...]:
    """Chat messages for one clip; `hint` (a retry) is appended to the user turn."""
    m = cues.measures
    minority = ", ".join(cues.minority)
    fields = {
        "label": cues.label,
        "transcript": cues.transcript or "(no words recognised)",
        "gender": cues.gender if cues.gender != "unknown" else "not known",
        "caption": cues.caption or "not measured",
        "f0_median_hz": _fmt(m.get("f0_median_hz"), 0),
        "f0_range_st": _fmt(m.get("f0_range_st")),
        "energy_dbfs": _fmt(m.get("energy_dbfs")),
        "rate_sps": _fmt(m.get("rate_sps")),
        "pause_ratio": _fmt(m.get("pause_ratio"), 2),
        "label_set": ", ".join(cues.label_set),
        "minority_note": spec.minority_note.format(minority=minority) if minority else "",
    }
    template = spec.user_with_label if with_label else spec.user_without_label
    user = template.format(**fields)
    if hint:
        user += "\n" + spec.retry_hint.format(problems=hint)
    return ({"role": "system", "content": spec.system}, {"role": "user", "content": user})
