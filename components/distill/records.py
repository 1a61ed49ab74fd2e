"""What the teacher, the verifier and the cache exchange about one clip."""
from __future__ import annotations

from dataclasses import dataclass, field

LEVEL_FIELDS = ("pitch_level", "pitch_range_level", "energy_level", "rate_level", "pause_level",
                "intonation")
MEASURE_FIELDS = ("f0_median_hz", "f0_range_st", "energy_dbfs", "rate_sps", "pause_ratio",
                  "jitter", "shimmer", "hnr_db", "duration_s")


@dataclass(frozen=True)
class ClipCues:
    """Everything known about a training clip that a rationale may draw on."""

    utt_id: str
    transcript: str
    label: str
    """The consensus label the rationale explains."""
    label_set: tuple[str, ...]
    minority: tuple[str, ...] = ()
    """Other labels some annotator chose, most chosen first."""
    gender: str = "unknown"
    caption: str = ""
    levels: dict[str, str] = field(default_factory=dict)
    """LEVEL_FIELDS -> measured level (low/normal/high, slow/normal/fast, rising, ...)."""
    measures: dict[str, float] = field(default_factory=dict)
    """MEASURE_FIELDS -> measured value."""


@dataclass(frozen=True)
class TeacherRequest:
    """One generation: chat messages for model backends, the cues for the template writer."""

    utt_id: str
    messages: tuple[dict, ...]
    cues: ClipCues
    with_label: bool = True
    """False in STaR's unhinted pass: the teacher must work the label out itself."""
    hint: str | None = None
    """Why the previous attempt was rejected (a retry), or None."""
    draw: int = 0
    """Which draw this is for the same prompt (STaR iterations): sampling backends seed on it."""


@dataclass(frozen=True)
class TeacherReply:
    text: str | None
    error: str | None = None
    """Why no text came back (timeout, HTTP error, ...)."""
