"""Canonical emotion names and each corpus's explicit code map (the frozen label contract).

Loaders return the corpus's own codes; the manifest builder maps them here, so every corpus
is translated in one visible place and nothing is mapped implicitly.
"""

CANONICAL_LABELS = (
    "neutral", "calm", "happy", "sad", "angry", "fear", "disgust",
    "contempt", "surprise", "boredom", "other",
)

#: Returned by a code map for codes that mean "annotators did not agree" (no consensus).
NO_AGREEMENT = ""

CORPUS_CODE_MAPS: dict[str, dict[str, str]] = {
    # RAVDESS file-name emotion field.
    "ravdess": {
        "01": "neutral", "02": "calm", "03": "happy", "04": "sad",
        "05": "angry", "06": "fear", "07": "disgust", "08": "surprise",
    },
    # CREMA-D vote columns and clip-name emotion codes.
    "cremad": {
        "A": "angry", "D": "disgust", "F": "fear", "H": "happy", "N": "neutral", "S": "sad",
        "ANG": "angry", "DIS": "disgust", "FEA": "fear", "HAP": "happy", "NEU": "neutral",
        "SAD": "sad",
    },
    # MSP-Podcast EmoClass codes and the words used in the detailed per-rater labels.
    "msp_podcast": {
        "A": "angry", "S": "sad", "H": "happy", "U": "surprise", "F": "fear", "D": "disgust",
        "C": "contempt", "N": "neutral", "O": "other", "X": NO_AGREEMENT,
        "Angry": "angry", "Sad": "sad", "Happy": "happy", "Surprise": "surprise",
        "Fear": "fear", "Disgust": "disgust", "Contempt": "contempt", "Neutral": "neutral",
        "Other": "other",
    },
    # IEMOCAP header codes and the evaluators' category words.
    "iemocap": {
        "neu": "neutral", "hap": "happy", "exc": "happy", "sad": "sad", "ang": "angry",
        "fea": "fear", "dis": "disgust", "sur": "surprise", "fru": "other", "oth": "other",
        "xxx": NO_AGREEMENT,
        "Neutral": "neutral", "Happiness": "happy", "Excited": "happy", "Sadness": "sad",
        "Anger": "angry", "Fear": "fear", "Disgust": "disgust", "Surprise": "surprise",
        "Frustration": "other", "Other": "other",
    },
    # EmoDB file-name emotion letter (German initials).
    "emodb": {
        "W": "angry", "L": "boredom", "E": "disgust", "A": "fear", "F": "happy",
        "T": "sad", "N": "neutral",
    },
    # The demo corpus already speaks canonical names.
    "demo": {name: name for name in CANONICAL_LABELS},
}


def code_map(corpus: str) -> dict[str, str]:
    """The code map of a corpus; a clear error for an unknown corpus."""
    try:
        return CORPUS_CODE_MAPS[corpus]
    except KeyError:
        raise ValueError(
            f"unknown corpus {corpus!r}; known: {', '.join(sorted(CORPUS_CODE_MAPS))}"
        ) from None
