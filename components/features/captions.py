"""A short structured caption of how a clip was said, from its levels and contour.

The caption is what a language model reads about prosody, e.g.
"pitch high, wide range, rising intonation; energy loud; rate fast; many pauses".
Values that could not be measured say so ("pitch not measured", "intonation uncertain")
rather than disappear.
"""
from __future__ import annotations

from components.features.levels import PAUSE_NAMES, TERTILE_LEVELS, UNKNOWN

CONTOURS = ("rising", "falling", "rise-fall", "fall-rise", "flat", "expressive")
ENERGY_WORDS = {"low": "soft", "normal": "normal", "high": "loud"}
PAUSE_PHRASES = dict(zip(PAUSE_NAMES, ("no pauses", "some pauses", "many pauses")))
CAPTION_FIELDS = ("pitch_level", "pitch_range_level", "contour", "energy_level", "rate_level", "pause_level")


def _check(row: dict, field: str, allowed: tuple[str, ...]) -> str:
    value = row[field]
    if value not in allowed:
        raise ValueError(f"{field} is {value!r}, expected one of {allowed}")
    return value


def prosody_caption(row: dict) -> str:
    """Caption from a row with CAPTION_FIELDS (levels from `apply_levels`, contour from
    `measure_prosody`)."""
    missing = [f for f in CAPTION_FIELDS if f not in row]
    if missing:
        raise ValueError(f"caption needs {missing}")
    names = {level: (*words, UNKNOWN) for level, (_, words) in TERTILE_LEVELS.items()}
    pitch = _check(row, "pitch_level", names["pitch"])
    pitch_range = _check(row, "pitch_range_level", names["pitch_range"])
    contour = _check(row, "contour", (*CONTOURS, "uncertain", "too_short"))
    energy = _check(row, "energy_level", names["energy"])
    rate = _check(row, "rate_level", names["rate"])
    pauses = _check(row, "pause_level", (*PAUSE_NAMES, UNKNOWN))

    pitch_part = [f"pitch {pitch}" if pitch != UNKNOWN else "pitch not measured"]
    if pitch_range != UNKNOWN:
        pitch_part.append(f"{pitch_range} range")
    if contour in CONTOURS:
        pitch_part.append(f"{contour} intonation")
    else:
        pitch_part.append("intonation uncertain" if contour == "uncertain" else "too little voicing for intonation")
    parts = [
        ", ".join(pitch_part),
        f"energy {ENERGY_WORDS[energy]}" if energy != UNKNOWN else "energy not measured",
        f"rate {rate}" if rate != UNKNOWN else "rate not measured",
        PAUSE_PHRASES.get(pauses, "pauses not measured"),
    ]
    return "; ".join(parts)
