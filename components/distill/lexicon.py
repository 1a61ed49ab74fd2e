"""Words the rationale checker reads and the template writer writes, kept in one place.

Two vocabularies live here. The emotion side says which words argue for which label (the
label's own word forms, synonyms, voice descriptions typical of it, and words in a transcript
that suggest it). The acoustic side says which words describe which measured cue and level
(`loud` -> energy high, `high` + `pitch` -> pitch high), in the level names that
`components.features.levels` and `captions` use. Keeping both in one module means the
template can only say what the checker can read back.
"""
from __future__ import annotations

from components.features.captions import CONTOURS

CUES = ("pitch", "pitch_range", "energy", "rate", "pause", "intonation")
CUE_FIELDS = {
    "pitch": "pitch_level", "pitch_range": "pitch_range_level", "energy": "energy_level",
    "rate": "rate_level", "pause": "pause_level", "intonation": "intonation",
}
"""Claim cue -> key of `ClipCues.levels`."""
CUE_VALUES = {
    "pitch": ("low", "normal", "high"),
    "pitch_range": ("narrow", "normal", "wide"),
    "energy": ("low", "normal", "high"),
    "rate": ("slow", "normal", "fast"),
    "pause": ("none", "some", "many"),
    "intonation": CONTOURS,
}
"""The levels a measurement (and so a claim) can take; anything else counts as unmeasured."""

CONTRADICTIONS = {
    "pitch": {("high", "low")},
    "pitch_range": {("wide", "narrow")},
    "energy": {("high", "low")},
    "rate": {("fast", "slow")},
    "pause": {("many", "none"), ("some", "none")},
    "intonation": {("rising", "falling"), ("rise-fall", "fall-rise"), ("flat", "expressive")},
}
"""Pairs of levels that cannot both be true of one clip (either order)."""
COMPATIBLE = {("pause", "some", "many")}
"""(cue, claimed, measured) that agree although the names differ: a clip with many pauses
does have some pauses."""


def contradicts(cue: str, a: str, b: str) -> bool:
    pairs = CONTRADICTIONS[cue]
    return (a, b) in pairs or (b, a) in pairs


# A cue and level in words, for hints ("it claims high pitch ...") and the template.
_PHRASES = {
    ("pitch", "high"): "high pitch", ("pitch", "low"): "low pitch",
    ("pitch", "normal"): "a normal pitch",
    ("pitch_range", "wide"): "a wide pitch range", ("pitch_range", "narrow"): "a narrow pitch range",
    ("pitch_range", "normal"): "a normal pitch range",
    ("energy", "high"): "a loud voice", ("energy", "low"): "a soft voice",
    ("energy", "normal"): "moderate loudness",
    ("rate", "fast"): "a fast pace", ("rate", "slow"): "a slow pace",
    ("rate", "normal"): "a moderate pace",
    ("pause", "none"): "no pauses", ("pause", "some"): "some pauses", ("pause", "many"): "many pauses",
    **{("intonation", c): f"{c} intonation" for c in ("rising", "falling", "flat", "expressive")},
    ("intonation", "rise-fall"): "a rise-fall contour", ("intonation", "fall-rise"): "a fall-rise contour",
}


def describe(cue: str, value: str) -> str:
    """'high pitch', 'a loud voice', 'many pauses', ...; unmeasured levels say so."""
    phrase = _PHRASES.get((cue, value))
    if phrase is None:
        return f"{cue.replace('_', ' ')} not measured"
    return phrase


# ---------------------------------------------------------------- emotion words
LABEL_FORMS: dict[str, tuple[str, ...]] = {
    "neutral": ("neutral", "neutrally", "neutrality"),
    "calm": ("calm", "calmly", "calmness", "calmer"),
    "happy": ("happy", "happiness", "happily", "happier"),
    "sad": ("sad", "sadness", "sadly", "saddened", "sadder"),
    "angry": ("angry", "anger", "angrily", "angered", "angrier"),
    "fear": ("fear", "fearful", "fearfully", "feared", "fears", "fearing"),
    "disgust": ("disgust", "disgusted", "disgusting", "disgustedly"),
    "contempt": ("contempt", "contemptuous", "contemptuously"),
    "surprise": ("surprise", "surprised", "surprising", "surprises"),
    "boredom": ("boredom", "bored", "boring"),
    "other": (),
}
"""Each label's own word forms: one of these among a rationale's first words leaks the label."""

_SYNONYMS: dict[str, tuple[str, ...]] = {
    "neutral": ("unemotional", "emotionless", "matter-of-fact", "dispassionate",
                "no particular emotion", "no strong emotion", "without emotion"),
    "calm": ("relaxed", "serene", "serenity", "peaceful", "tranquil", "composed", "placid",
             "at ease", "soothing"),
    "happy": ("joy", "joyful", "joyous", "cheerful", "cheerfulness", "delighted", "delight",
              "glad", "elated", "elation", "excited", "excitement", "enthusiastic", "enthusiasm",
              "pleased", "amused", "amusement", "contentment"),
    "sad": ("sorrow", "sorrowful", "unhappy", "unhappiness", "grief", "grieving", "melancholy",
            "melancholic", "gloomy", "gloom", "dejected", "dejection", "downcast", "despondent",
            "depressed", "mournful", "forlorn", "heartbroken", "miserable", "misery", "despair",
            "disappointed", "disappointment"),
    "angry": ("furious", "fury", "rage", "enraged", "irritated", "irritation", "annoyed",
              "annoyance", "irate", "hostile", "hostility", "indignant", "indignation",
              "outraged", "outrage", "frustrated", "frustration", "resentful", "resentment",
              "exasperated", "exasperation"),
    "fear": ("afraid", "scared", "frightened", "terrified", "terror", "panic", "panicked",
             "panicky", "anxious", "anxiety", "nervous", "nervousness", "worried", "worry",
             "dread", "alarmed", "apprehensive", "apprehension", "uneasy", "unease"),
    "disgust": ("revulsion", "revolted", "repulsed", "repulsion", "repelled", "distaste",
                "aversion", "nauseated", "grossed out"),
    "contempt": ("scorn", "scornful", "disdain", "disdainful", "derision", "derisive",
                 "dismissive", "condescending", "condescension"),
    "surprise": ("astonished", "astonishment", "amazed", "amazement", "startled", "shocked",
                 "stunned", "disbelief", "incredulous", "incredulity"),
    "boredom": ("uninterested", "disinterested", "disinterest", "indifferent", "indifference",
                "apathetic", "apathy", "unenthusiastic", "unengaged"),
    "other": ("another emotion", "mixed emotion", "mixed emotions", "mixed feelings"),
}

EMOTION_WORDS: dict[str, tuple[str, ...]] = {
    label: forms + _SYNONYMS[label] for label, forms in LABEL_FORMS.items()
}
"""Words that argue for a label when a rationale uses them (its forms and synonyms)."""

VOICE_HINTS: dict[str, tuple[str, ...]] = {
    "angry": ("shouting", "yelling", "snapping", "harsh", "tense", "clipped"),
    "happy": ("laughing", "laughter", "smiling", "bright", "upbeat", "bubbly", "warm"),
    "sad": ("sighing", "sigh", "tearful", "crying", "heavy", "trailing off", "weary"),
    "fear": ("trembling", "tremble", "shaky", "shaking", "quivering", "breathless"),
    "surprise": ("gasp", "gasping", "exclamation", "exclaiming"),
    "disgust": ("ugh", "grimacing", "recoiling"),
    "contempt": ("sneering", "sneer", "sarcastic", "sarcasm", "mocking", "smug"),
    "boredom": ("listless", "droning", "drawling", "lifeless"),
    "calm": ("steady", "gentle", "unhurried"),
    "neutral": ("businesslike", "even-toned"),
}
"""How a voice typical of a label is often described: weaker evidence than EMOTION_WORDS."""

TRANSCRIPT_WORDS: dict[str, tuple[str, ...]] = {
    "angry": ("how dare", "sick and tired", "get out", "shut up", "unacceptable", "cheated",
              "liar", "idiot", "stupid", "hate", "damn", "ridiculous", "how could you"),
    "happy": ("great", "wonderful", "fantastic", "amazing", "best", "lucky", "love", "won",
              "celebrate", "celebrating", "beautiful", "yay", "hooray", "congratulations"),
    "sad": ("miss", "passed away", "died", "alone", "goodbye", "lost", "lonely", "empty",
            "cry", "crying", "never get better", "sorry", "nobody"),
    "fear": ("help", "crash", "dark", "danger", "dangerous", "hide", "careful",
             "what was that"),
    "surprise": ("no way", "never expected", "wow", "really?", "what?", "can't believe",
                 "cannot believe", "unbelievable", "oh my"),
    "disgust": ("revolting", "gross", "yuck", "vile", "rotten", "rotted", "mouldy", "moldy",
                "smell", "feel sick", "ugh", "filthy", "nasty"),
    "contempt": ("pathetic", "whatever you say", "as if", "typical", "useless"),
    "boredom": ("nothing to do", "same old", "as usual", "nothing ever happens",
                "nothing ever happened", "again and again"),
    "calm": ("no rush", "everything is fine", "take it easy", "deep breath", "relaxed",
             "plenty of time", "peaceful", "quiet"),
}
"""Words in what was said that suggest a label (weak: the voice outweighs them)."""

EMOTION_NOUNS = {
    "neutral": "a neutral state", "calm": "calm", "happy": "happiness", "sad": "sadness",
    "angry": "anger", "fear": "fear", "disgust": "disgust", "contempt": "contempt",
    "surprise": "surprise", "boredom": "boredom", "other": "another emotion outside these",
}
"""How a rationale names a label in its conclusion ('... point to sadness')."""


def emotion_noun(label: str) -> str:
    return EMOTION_NOUNS.get(label, label)


def label_forms(label: str) -> tuple[str, ...]:
    """A label's own word forms; a label outside the canonical set is its own only form."""
    return LABEL_FORMS.get(label, (label,))


def emotion_words(label: str) -> tuple[str, ...]:
    return EMOTION_WORDS.get(label, (label,))


# ---------------------------------------------------------------- rationale structure
NEGATORS = frozenset((
    "not", "no", "never", "without", "hardly", "barely", "neither", "nor", "lacks", "lack",
    "lacking", "isn't", "wasn't", "aren't", "doesn't", "don't", "didn't", "nothing",
    "instead of", "rather than", "free of", "absence of", "far from", "no sign of",
))
"""A negator shortly before a word cancels it ('not loud', 'rather than anger')."""

MINORITY_MARKERS = (
    "some listeners", "some annotators", "some raters", "some people", "some might",
    "some may", "some could", "some would", "other listeners", "others", "a minority",
    "minority", "alternatively", "another reading", "alternative reading", "second reading",
    "could also", "might also", "may also", "one could",
)
"""A sentence about what others heard: its emotion words are not the conclusion."""
LOCAL_HEDGES = (
    "might", "may", "could", "perhaps", "possibly", "although", "though", "even if",
    "even though", "at first", "on the surface", "on their own", "by themselves", "if",
    "instead",
)
"""Hedges that weaken only their own clause ('instead of' is a negator, not a hedge)."""
CLAUSE_OPENERS = ("but", "however", "yet", "whereas", "while", "although", "though")
"""Words that start a new clause mid-sentence: a cue word's noun is not looked for across them."""
SUBORDINATORS = ("although", "though", "while", "whereas", "even if", "even though", "if")
"""A clause opening with one of these is subordinate: its hedge stays inside it."""
CONTRASTS = ("but", "however", "yet", "still", "nevertheless", "overall", "ultimately",
             "in the end")
"""A clause opening with one of these returns to the speaker's own reading."""
WORD_REFERENCES = ("words", "wording", "transcript", "lexical", "literal", "literally",
                   "phrasing", "content", "text")
"""A clause about what was said: its emotion words are secondary to the voice."""

# ---------------------------------------------------------------- acoustic words
NOUN_CLASSES: dict[str, str] = {
    **dict.fromkeys(("pitch", "pitched", "f0", "fundamental", "register"), "pitch"),
    **dict.fromkeys(("voice", "tone", "tones"), "voice"),
    **dict.fromkeys(("energy", "volume", "loudness", "intensity", "amplitude"), "energy"),
    **dict.fromkeys(("rate", "pace", "tempo", "speed", "paced"), "rate"),
    **dict.fromkeys(("range", "ranging", "variation", "variability", "swings", "swing",
                     "excursions", "spread", "span", "movement", "movements"), "range"),
    **dict.fromkeys(("intonation", "contour", "melody", "inflection", "inflections",
                     "intonational"), "intonation"),
    **dict.fromkeys(("delivery", "speech", "speaking", "talking", "manner", "affect",
                     "prosody", "sound"), "general"),
}
"""Nouns that tell which cue an ambiguous level word ('high', 'flat') is about."""

_UP = {"pitch": ("pitch", "high"), "voice": ("pitch", "high"), "energy": ("energy", "high"),
       "rate": ("rate", "fast"), "range": ("pitch_range", "wide")}
_DOWN = {"pitch": ("pitch", "low"), "energy": ("energy", "low"), "rate": ("rate", "slow"),
         "range": ("pitch_range", "narrow")}
_NORMAL = {"pitch": ("pitch", "normal"), "energy": ("energy", "normal"),
           "rate": ("rate", "normal"), "range": ("pitch_range", "normal")}
_WIDE = {"range": ("pitch_range", "wide")}
_NARROW = {"range": ("pitch_range", "narrow")}
_VARIED = {"pitch": ("pitch_range", "wide"), "voice": ("pitch_range", "wide"),
           "range": ("pitch_range", "wide"), "general": ("pitch_range", "wide"),
           "intonation": ("intonation", "expressive")}
_FLAT = {"intonation": ("intonation", "flat"), "pitch": ("pitch_range", "narrow"),
         "voice": ("pitch_range", "narrow"), "general": ("pitch_range", "narrow"),
         "range": ("pitch_range", "narrow")}
ANY_NOUN = "*"
"""Key of a LEVEL_WORDS entry used when no noun decides (or the noun is of another class)."""


def _always(cue: str, value: str) -> dict:
    return {ANY_NOUN: (cue, value)}


LEVEL_WORDS: dict[str, dict] = {
    # ambiguous direction words: the noun decides the cue
    **dict.fromkeys(("high", "higher", "elevated", "heightened", "increased"), _UP),
    "raised": {**_UP, "voice": ("energy", "high")},
    **dict.fromkeys(("low", "lower", "reduced", "decreased"), _DOWN),
    "lowered": {**_DOWN, "voice": ("energy", "low")},
    "deep": {"pitch": ("pitch", "low"), "voice": ("pitch", "low")},
    "deeper": {"pitch": ("pitch", "low"), "voice": ("pitch", "low")},
    **dict.fromkeys(("normal", "moderate", "average", "medium", "mid-range", "midrange",
                     "typical", "ordinary", "middling", "unremarkable"), _NORMAL),
    # pitch
    **dict.fromkeys(("shrill", "squeaky", "high-pitched", "higher-pitched"),
                    _always("pitch", "high")),
    **dict.fromkeys(("low-pitched", "lower-pitched"), _always("pitch", "low")),
    # pitch range
    **dict.fromkeys(("wide", "wider", "broad", "large", "big"), _WIDE),
    **dict.fromkeys(("narrow", "narrower", "limited", "restricted", "compressed", "small",
                     "little"), _NARROW),
    **dict.fromkeys(("wide-ranging", "sing-song", "singsong", "melodic"),
                    _always("pitch_range", "wide")),
    **dict.fromkeys(("varied", "variable", "animated"), _VARIED),
    **dict.fromkeys(("monotone", "monotonous", "monotonic"), _always("pitch_range", "narrow")),
    # energy
    **dict.fromkeys(("loud", "louder", "loudly", "forceful", "forcefully", "booming",
                     "shouted", "powerful", "high-energy"), _always("energy", "high")),
    **dict.fromkeys(("soft", "softer", "softly", "quiet", "quieter", "quietly", "hushed",
                     "whispered", "whispering", "muted", "subdued", "faint", "faintly",
                     "soft-spoken", "low-energy"), _always("energy", "low")),
    # rate
    **dict.fromkeys(("fast", "faster", "quick", "quickly", "rapid", "rapidly", "hurried",
                     "hurriedly", "rushed", "brisk", "briskly", "fast-paced"),
                    _always("rate", "fast")),
    **dict.fromkeys(("slow", "slower", "slowly", "sluggish", "leisurely", "drawn-out",
                     "slow-paced", "dragging"), _always("rate", "slow")),
    # intonation shapes (the direction words are in CONTOUR_WORDS)
    "flat": _FLAT,
    "level": {"intonation": ("intonation", "flat")},
    "expressive": {"intonation": ("intonation", "expressive")},
    "questioning": {"intonation": ("intonation", "rising"), "voice": ("intonation", "rising")},
    **dict.fromkeys(("rise-fall", "rising-falling"), _always("intonation", "rise-fall")),
    **dict.fromkeys(("fall-rise", "falling-rising"), _always("intonation", "fall-rise")),
}
"""Word -> {noun class -> (cue, level)}; `*` applies when no noun of a listed class is near."""

RATE_WORDS_NOT_BEFORE = frozenset(("rise", "rises", "rising", "fall", "falls", "falling",
                                   "drop", "drops", "change", "changes", "shift", "shifts",
                                   "glide", "movement", "decay", "pitch", "intonation"))
"""'a quick rise in pitch' is about the contour, not the speaking rate."""

CONTOUR_WORDS: dict[str, str] = {
    **dict.fromkeys(("rising", "rises", "rise", "rose", "upward", "upturn", "uptick",
                     "climbs", "climbing"), "rising"),
    **dict.fromkeys(("falling", "falls", "fall", "fell", "downward", "drops", "dropping",
                     "drop", "declining", "declines", "descending", "descends", "sinking",
                     "sinks"), "falling"),
}
"""Direction words: an intonation claim only near a pitch/intonation noun or the clip's end."""
CONTOUR_CONTEXT = frozenset(("end", "ending", "final", "finally", "close", "toward",
                             "towards", "note", "question", "phrase-final"))

PAUSE_WORDS = frozenset(("pause", "pauses", "paused", "pausing", "hesitation", "hesitations",
                         "hesitant", "hesitantly", "hesitates", "hesitating", "halting",
                         "haltingly", "silences", "stumbling", "faltering"))
FLUENT_WORDS = frozenset(("fluent", "fluently", "fluid", "fluidly", "uninterrupted",
                          "unbroken", "seamless", "seamlessly", "continuous", "continuously"))
MANY_PAUSES = frozenset(("many", "frequent", "frequently", "long", "lengthy", "numerous",
                         "several", "repeated", "repeatedly", "multiple", "lots", "plenty",
                         "extended", "prolonged", "constant", "often"))
"""Quantifiers that make a pause claim 'many'; any other mention of pauses claims 'some'."""
PAUSE_NOT_BEFORE = frozenset(("ratio", "ratios", "length", "lengths", "duration", "rate"))
"""'pause ratio 0.12' is a number, not a claim."""

MODIFIERS = frozenset((
    "very", "quite", "rather", "fairly", "relatively", "somewhat", "noticeably", "markedly",
    "clearly", "unusually", "strikingly", "slightly", "particularly", "especially",
    "consistently", "distinctly", "comparatively", "mostly", "generally", "notably", "pretty",
    "extremely", "really", "too", "so", "more", "much", "overall", "moderately", "remarkably",
    "decidedly", "audibly", "almost", "nearly", "bit", "predominantly", "largely",
    "mainly",
))
FILLERS = frozenset((
    "is", "was", "are", "were", "be", "been", "being", "seems", "seemed", "sounds", "sounded",
    "sits", "sat", "stays", "stayed", "remains", "remained", "runs", "ran", "feels", "felt",
    "appears", "appeared", "becomes", "became", "gets", "got", "keeps", "kept", "measured",
    "as", "the", "a", "an", "its", "his", "her", "their", "level", "levels", "itself", "both",
    "also", "still", "and", "speaker's",
))
"""Words that may stand between a noun and its predicate ('the pitch is quite high')."""
