"""The `template` teacher: a grounded rationale composed from the measured cues alone.

It needs no model and no network, so the pipeline always has a teacher that writes rationales
which pass `verify`: every voice claim it makes is a level that was measured, it quotes the
transcript, says when the words suggest another emotion than the voice, mentions the
minority reading, and names its emotion only in the last sentence. Wording is chosen from a
hash of the clip id, so clips read differently but a clip always gets the same text.

Without the label (STaR's unhinted pass) it picks the emotion by matching the levels against
rough prototype profiles (`PROFILES`), with the transcript's emotion words as a tie-breaker,
and leaves out the minority vote (annotation the unhinted pass must not see). That is a weak
heuristic baseline, not a classifier: emotions overlap a lot in these coarse levels, and it
only has to be better than chance for bootstrapping to help.
"""
from __future__ import annotations

import hashlib
import random
import re

from components.cache_keys import code_hash
from components.distill import lexicon as lx
from components.distill.records import ClipCues, TeacherReply, TeacherRequest

MAX_QUOTED_WORDS = 14

PROFILES: dict[str, dict[str, dict[str, float]]] = {
    "angry": {"energy": {"high": 1.0}, "rate": {"fast": 1.0}, "pitch": {"high": 0.5},
              "pitch_range": {"wide": 0.5}, "pause": {"none": 0.25},
              "intonation": {"falling": 0.25}},
    "happy": {"pitch": {"high": 1.0}, "pitch_range": {"wide": 1.0}, "energy": {"high": 0.5},
              "rate": {"normal": 0.25}, "intonation": {"expressive": 0.5, "rise-fall": 0.25}},
    "sad": {"energy": {"low": 1.0}, "pitch": {"low": 0.75}, "pitch_range": {"narrow": 0.75},
            "rate": {"slow": 0.75}, "pause": {"many": 0.75, "some": 0.5},
            "intonation": {"falling": 0.25}},
    "fear": {"pitch": {"high": 1.0}, "rate": {"fast": 1.0}, "pitch_range": {"narrow": 0.75},
             "pause": {"some": 0.25}},
    "surprise": {"pitch": {"high": 1.0}, "pitch_range": {"wide": 0.75},
                 "intonation": {"rising": 1.0}, "energy": {"high": 0.25}},
    "neutral": {"pitch": {"normal": 0.75}, "pitch_range": {"normal": 0.75},
                "energy": {"normal": 0.75}, "rate": {"normal": 0.75}, "pause": {"none": 0.25},
                "intonation": {"falling": 0.25, "flat": 0.25}},
    "calm": {"energy": {"low": 0.5, "normal": 0.25}, "rate": {"slow": 0.5, "normal": 0.25},
             "pitch": {"low": 0.25, "normal": 0.25}, "pitch_range": {"narrow": 0.25, "normal": 0.25},
             "pause": {"some": 0.5}},
    "disgust": {"pitch": {"low": 0.75}, "rate": {"slow": 0.75}, "energy": {"normal": 0.25},
                "pitch_range": {"wide": 0.25}, "pause": {"some": 0.5},
                "intonation": {"fall-rise": 0.25, "falling": 0.25}},
    "contempt": {"pitch": {"low": 0.5}, "rate": {"slow": 0.5}, "energy": {"low": 0.25},
                 "pitch_range": {"narrow": 0.5}, "intonation": {"rise-fall": 0.5, "falling": 0.25}},
    "boredom": {"pitch_range": {"narrow": 1.0}, "rate": {"slow": 1.0}, "energy": {"low": 0.75},
                "pitch": {"low": 0.5}, "intonation": {"flat": 0.75}},
}
"""Label -> cue -> level -> weight: how typical a measured level is of the emotion. A
measured level opposite to a preferred one costs that preference's weight (the largest one,
once per cue)."""
WORDS_WEIGHT = 0.1
"""What the transcript's emotion words add in the unhinted pass: less than any profile weight,
so they only break ties."""

# Clauses per measured level; each must read back (verify.acoustic_claims) as that level.
CLAUSES: dict[tuple[str, str], tuple[str, ...]] = {
    ("pitch", "high"): ("the pitch sits high", "the voice is high-pitched", "the pitch is high"),
    ("pitch", "low"): ("the pitch sits low", "the voice is low-pitched", "the pitch is low"),
    ("pitch", "normal"): ("the pitch is in a normal register", "the pitch is moderate"),
    ("pitch_range", "wide"): ("the pitch range is wide", "the pitch moves across a wide range"),
    ("pitch_range", "narrow"): ("the pitch range is narrow", "the pitch stays within a narrow range",
                                "the delivery is almost monotone"),
    ("pitch_range", "normal"): ("the pitch range is ordinary", "the pitch range is moderate"),
    ("energy", "high"): ("the voice is loud", "the delivery is loud and forceful", "loudness is high"),
    ("energy", "low"): ("the voice is soft", "the delivery is quiet", "loudness is low"),
    ("energy", "normal"): ("loudness is moderate", "the volume is average"),
    ("rate", "fast"): ("the speaking rate is fast", "the words come quickly", "the pace is rapid"),
    ("rate", "slow"): ("the speaking rate is slow", "the words come slowly", "the pace is slow"),
    ("rate", "normal"): ("the pace is moderate", "the speaking rate is average"),
    ("pause", "none"): ("there are no pauses", "the sentence runs without pauses"),
    ("pause", "some"): ("there are a few pauses", "a few short pauses break it up"),
    ("pause", "many"): ("there are many pauses", "long pauses break up the sentence"),
    ("intonation", "rising"): ("the intonation rises at the end", "the contour rises toward the end"),
    ("intonation", "falling"): ("the intonation falls at the end", "the contour falls toward the end"),
    ("intonation", "rise-fall"): ("the pitch rises and then falls", "the contour has a rise-fall shape"),
    ("intonation", "fall-rise"): ("the pitch falls and then rises", "the contour has a fall-rise shape"),
    ("intonation", "flat"): ("the intonation stays flat", "the contour is flat"),
    ("intonation", "expressive"): ("the intonation is expressive", "the intonation contour is expressive"),
}
PITCH_GROUP, DELIVERY_GROUP = ("pitch", "pitch_range", "intonation"), ("energy", "rate", "pause")
OPENERS = ("", "Acoustically, ", "In this clip, ", "Here, ")
LINKS = ("", "at the same time, ", "meanwhile, ")
WORDS_PLAIN = (
    'The words "{t}" carry little feeling of their own, so the voice does the work.',
    'What is said, "{t}", gives little away by itself; how it is said matters more.',
)
WORDS_AGREE = (
    'The words "{t}" point the same way as the voice.',
    'What is said, "{t}", fits how it is said.',
)
WORDS_DISAGREE = (
    'On their own, the words "{t}" might suggest {other}, but the voice outweighs them.',
    'The words "{t}" could hint at {other}, yet the delivery matters more here.',
)
NO_WORDS = "No words were recognised, so the judgement rests on the voice alone."
MINORITY_WITH_CUE = (
    "Some listeners heard {other} instead, perhaps because of {cue}.",
    "A minority of listeners chose {other}, which {cue} could also support.",
)
MINORITY_WITHOUT_CUE = ("Some listeners heard {other} instead, though the voice supports that "
                        "reading less well.")
CONCLUSIONS = (
    "Together these cues point to {emotion}.",
    "Taken together, the delivery points to {emotion}.",
    "All of this is most consistent with {emotion}.",
    "Overall, the voice conveys {emotion}.",
)
PADDING = (
    "The judgement rests on how the words were said more than on what was said.",
    "It is the delivery, more than the wording, that carries the feeling here.",
)
MIN_WORDS = 30


def measured_levels(cues: ClipCues) -> dict[str, str]:
    """Cue -> measured level, leaving out what was not measured ('unknown', 'uncertain')."""
    out = {}
    for cue, key in lx.CUE_FIELDS.items():
        value = cues.levels.get(key)
        if value in lx.CUE_VALUES[cue]:
            out[cue] = value
    return out


def _phrase_pattern(phrases) -> re.Pattern:
    """Whole words or phrases, longest first, case-insensitive ('really?' included)."""
    ordered = sorted(set(phrases), key=len, reverse=True)
    return re.compile(r"(?<!\w)(?:" + "|".join(map(re.escape, ordered)) + r")(?!\w)", re.I)


_WORD_EMOTIONS = {label: _phrase_pattern(lx.TRANSCRIPT_WORDS.get(label, ()) + lx.emotion_words(label))
                  for label in lx.LABEL_FORMS if label not in ("neutral", "other")}


def transcript_emotion(transcript: str, label_set) -> str | None:
    """The emotion the words alone suggest (most matches, first in `label_set` on a tie), or
    None for words that suggest none. Weak by design: a keyword match, no negation."""
    counts = {label: len(_WORD_EMOTIONS[label].findall(transcript))
              for label in label_set if label in _WORD_EMOTIONS}
    best = max(counts.values(), default=0)
    return next(label for label, n in counts.items() if n == best) if best else None


def profile_scores(cues: ClipCues) -> dict[str, float]:
    """How well the measured levels fit each label's profile, for the labels in
    `cues.label_set` (plus WORDS_WEIGHT for the label the transcript suggests)."""
    levels = measured_levels(cues)
    words = transcript_emotion(cues.transcript, cues.label_set)
    scores = {}
    for label in cues.label_set:
        score = WORDS_WEIGHT if label == words else 0.0
        for cue, prefs in PROFILES.get(label, {}).items():
            measured = levels.get(cue)
            if measured in prefs:
                score += prefs[measured]
            elif measured is not None:
                score -= max((w for v, w in prefs.items() if lx.contradicts(cue, v, measured)),
                             default=0.0)
        scores[label] = score
    return scores


def infer_label(cues: ClipCues) -> str:
    """The best-fitting profile in `cues.label_set` (first listed on a tie)."""
    if not cues.label_set:
        raise ValueError(f"{cues.utt_id}: no label set to choose an emotion from")
    scores = profile_scores(cues)
    return max(cues.label_set, key=lambda label: scores[label])


def _join(clauses: list[str]) -> str:
    return clauses[0] if len(clauses) == 1 else ", ".join(clauses[:-1]) + " and " + clauses[-1]


def _quote(transcript: str) -> str:
    words = transcript.replace('"', "'").rstrip(".").split()
    if len(words) > MAX_QUOTED_WORDS:
        return " ".join(words[:MAX_QUOTED_WORDS]) + " ..."
    return " ".join(words)


def _supporting_cue(label: str, levels: dict[str, str]) -> str | None:
    """The measured level most typical of `label`, in words ('a fast pace'), if any."""
    fits = [(weight, cue, value) for cue, prefs in PROFILES.get(label, {}).items()
            for value, weight in prefs.items()
            if levels.get(cue) == value and value != "normal" and (cue, value) != ("pause", "none")]
    if not fits:
        return None
    _, cue, value = max(fits)
    return lx.describe(cue, value)


def _voice_sentence(rng: random.Random, shown: dict[str, str]) -> str:
    """One sentence: the pitch (level, range, intonation), then the delivery."""
    pitch = [rng.choice(CLAUSES[(c, shown[c])]) for c in PITCH_GROUP if c in shown]
    delivery = [rng.choice(CLAUSES[(c, shown[c])]) for c in DELIVERY_GROUP if c in shown]
    if pitch and delivery:
        body = _join(pitch) + "; " + rng.choice(LINKS) + _join(delivery)
    else:
        body = _join(pitch or delivery)
    text = rng.choice(OPENERS) + body
    return text[0].upper() + text[1:] + "."


def _words_sentence(rng: random.Random, cues: ClipCues, label: str) -> str:
    """Quote the transcript and say how the words relate to the voice's emotion."""
    transcript = " ".join(cues.transcript.split())
    if not transcript:
        return NO_WORDS
    words = transcript_emotion(transcript, cues.label_set)
    if words is None:
        return rng.choice(WORDS_PLAIN).format(t=_quote(transcript))
    if words == label:
        return rng.choice(WORDS_AGREE).format(t=_quote(transcript))
    return rng.choice(WORDS_DISAGREE).format(t=_quote(transcript), other=lx.emotion_noun(words))


def _minority_sentence(rng: random.Random, minority: str, levels: dict[str, str]) -> str:
    cue = _supporting_cue(minority, levels)
    other = lx.emotion_noun(minority)
    if cue is None:
        return MINORITY_WITHOUT_CUE.format(other=other)
    return rng.choice(MINORITY_WITH_CUE).format(other=other, cue=cue)


def _n_words(sentences: list[str]) -> int:
    return sum(len(s.split()) for s in sentences)


_UNMARKED = {cue: ("normal", "none") if cue == "pause" else ("normal",) for cue in lx.CUES}
"""Levels that say little on their own: described only when nothing else was measured (most
clips have no pauses, so 'no pauses' is as unremarkable as a normal pitch)."""


def write_rationale(cues: ClipCues, label: str, with_minority: bool = True,
                    levels_shown: str = "salient") -> str:
    """A rationale for `label` from the cues, in 3-4 sentences: the voice, the words, the
    minority reading, and a conclusion naming the emotion last. The voice sentence names the
    marked levels (the unmarked ones too when nothing else was measured or the text would be
    too short), or with `levels_shown="all"` every measured level: a model trained on salient
    cues only still has to guess whether to mention a normal loudness or pace, and often
    says "loud" or "fast" for a clip measured normal. A padding sentence is added only when
    the minimum length is still not reached."""
    rng = random.Random(int.from_bytes(hashlib.sha256(cues.utt_id.encode()).digest()[:8], "big"))
    levels = measured_levels(cues)
    if not levels:
        raise ValueError(f"{cues.utt_id}: no voice cue was measured, nothing to ground a rationale on")
    marked = levels if levels_shown == "all" else \
        {cue: value for cue, value in levels.items() if value not in _UNMARKED[cue]}
    voice = [_voice_sentence(rng, marked or levels)]
    middle = [_words_sentence(rng, cues, label)]
    minority = next((m for m in cues.minority if m != label), None) if with_minority else None
    if minority:
        middle.append(_minority_sentence(rng, minority, levels))
    conclusion = [rng.choice(CONCLUSIONS).format(emotion=lx.emotion_noun(label))]
    if marked != levels and _n_words(voice + middle + conclusion) < MIN_WORDS:
        voice = [_voice_sentence(rng, levels)]
    for padding in PADDING:
        if _n_words(voice + middle + conclusion) >= MIN_WORDS:
            break
        middle.append(padding)
    return " ".join(voice + middle + conclusion)


class TemplateTeacher:
    """The deterministic `template` backend: reads `request.cues`, ignores the messages."""

    name = "template"
    uses_messages = False
    """The cache keys its output on the cues, so a prompt change does not redo it."""

    def __init__(self, levels_shown: str = "salient"):
        self.levels_shown = levels_shown
        """`distill.teacher.template_levels`: see `write_rationale`."""

    def config(self) -> dict:
        """What identifies this teacher's output in the cache: its code (this module and the
        project modules it imports), so a change to the wording or the profiles rewrites, and
        which levels it describes."""
        return {"name": self.name, "code": code_hash(__name__), "levels": self.levels_shown}

    def generate(self, requests: list[TeacherRequest]) -> list[TeacherReply]:
        """One reply per request, in order. A retry (`request.hint`) writes the same text: the
        template has nothing to learn from a hint. Bad input becomes that reply's error."""
        return [self._one(request) for request in requests]

    def _one(self, request: TeacherRequest) -> TeacherReply:
        cues = request.cues
        try:
            if request.with_label:
                return TeacherReply(text=write_rationale(cues, cues.label,
                                                         levels_shown=self.levels_shown))
            return TeacherReply(text=write_rationale(cues, infer_label(cues), with_minority=False,
                                                     levels_shown=self.levels_shown))
        except ValueError as error:
            return TeacherReply(text=None, error=str(error))
