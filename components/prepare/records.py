"""What a corpus loader hands to the manifest builder.

Loaders only read a corpus's own format; label mapping, consensus, agreement and splits are
computed once, in `components.prepare.manifest`, so every corpus is treated alike.
"""
from dataclasses import dataclass, field


class CorpusLayoutError(ValueError):
    """The folder given for a corpus does not look like that corpus (missing tables, no audio)."""


@dataclass
class RawUtterance:
    utt_id: str
    audio_path: str
    """Path of the audio file relative to the corpus data root, with '/' separators."""
    speaker: str
    gender: str
    """'female', 'male' or 'unknown'."""
    votes: list[tuple[str, str]] = field(default_factory=list)
    """(annotator id, the corpus's own label code) per rating, in the corpus's order."""
    transcript: str | None = None
    """The reference transcript when the corpus has one."""
    consensus_code: str | None = None
    """The corpus's own consensus code when it publishes one; None derives it from the votes."""
    split: str | None = None
    """The official split ('train', 'dev', 'test') when the corpus defines one."""


@dataclass
class LoadedCorpus:
    utterances: list[RawUtterance]
    problems: list[str] = field(default_factory=list)
    """Human-readable notes on rows the loader skipped or repaired (reported, never silent)."""
