"""Checks a teacher rationale before it is kept: grounded, not leaking, consistent, short.

A rationale is training data for the student, so it must not teach the student to claim what
it did not hear. `verify` reads back what the text says about the voice (`acoustic_claims`),
compares it with the measured levels (`grounding`), looks for the label given away up front
(`leakage`), works out which emotion the text argues for (`implied_label`) and checks the
length. Everything is rule-based over `lexicon`, so checking a rationale costs well under a
millisecond and the same text always gets the same verdict.

Quoted text (the transcript) is masked before reading: the words someone said are neither a
claim about their voice nor the rationale's own conclusion.
"""
from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import NamedTuple

from components.config import VerifyConfig
from components.distill import lexicon as lx
from components.distill.records import ClipCues
from components.markup import SPECIAL_TOKEN, THINK_CLOSE, THINK_OPEN

# ---------------------------------------------------------------- cleaning

_THINK_BLOCK = re.compile(f"{THINK_OPEN.pattern}.*?{THINK_CLOSE.pattern}",
                          re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"</?[A-Za-z][^<>]*>")
_FENCE = re.compile(r"```[A-Za-z]*")
_HEADING = re.compile(r"^\s*#+\s*", re.M)
_PREFIX = re.compile(r"^\s*(?:rationale|explanation|reasoning)\s*:\s*", re.I)
_QUOTE_PAIRS = {'"': '"', "\u201c": "\u201d", "'": "'"}


def clean_rationale(text: str | None) -> str:
    """The rationale without reasoning blocks, chat markup, markdown or a 'Rationale:' label.

    An unfinished `<think>` block means the model never got to the answer: everything from it
    on is dropped (often leaving nothing, which `verify` rejects as empty).
    """
    if not text:
        return ""
    out = _THINK_BLOCK.sub(" ", text)
    closes = list(THINK_CLOSE.finditer(out))
    if closes:
        out = out[closes[-1].end():]
    opened = THINK_OPEN.search(out)
    if opened:
        out = out[:opened.start()]
    out = SPECIAL_TOKEN.sub(" ", out)
    out = _TAG.sub(" ", out)
    out = _FENCE.sub(" ", out)
    out = out.replace("**", "").replace("__", "")
    out = _HEADING.sub("", out)
    out = " ".join(out.split())
    while True:
        stripped = _PREFIX.sub("", out)
        if stripped == out:
            break
        out = stripped
    if len(out) >= 2 and _QUOTE_PAIRS.get(out[0]) == out[-1] and out[-1] not in out[1:-1]:
        out = out[1:-1].strip()
    return out


# ---------------------------------------------------------------- shared reading

_QUOTED = re.compile(r'"[^"\n]{0,400}"|\u201c[^\u201d\n]{0,400}\u201d')
_TOKEN = re.compile(r"[A-Za-z0-9]+(?:['\u2019-][A-Za-z0-9]+)*|[.,;:!?()\[\]\u2014\u2013]")
_BARRIER_WORDS = frozenset(lx.CLAUSE_OPENERS)
_KNOWN_COMPOUNDS = frozenset(w for w in lx.LEVEL_WORDS if "-" in w)


class _Tok(NamedTuple):
    text: str
    start: int
    end: int
    barrier: bool
    """Punctuation or a contrast word: a cue word's noun is never looked for across it."""


def _mask_quotes(text: str) -> str:
    """Quoted spans become spaces (offsets are kept, so spans still index the text)."""
    return _QUOTED.sub(lambda m: " " * len(m.group(0)), text)


@lru_cache(maxsize=512)
def _read(text: str) -> tuple[str, tuple[_Tok, ...]]:
    """The masked text and its tokens; hyphenated words split unless the lexicon knows them."""
    masked = _mask_quotes(text)
    toks: list[_Tok] = []
    for m in _TOKEN.finditer(masked):
        word = m.group(0).lower().replace("\u2019", "'")
        if not word[0].isalnum():
            toks.append(_Tok(word, m.start(), m.end(), True))
        elif "-" in word and word not in _KNOWN_COMPOUNDS:
            offset = m.start()
            for part in word.split("-"):
                toks.append(_Tok(part, offset, offset + len(part), False))
                offset += len(part) + 1
        else:
            toks.append(_Tok(word, m.start(), m.end(), word in _BARRIER_WORDS))
    return masked, tuple(toks)


_NEG_PAIRS = frozenset(n for n in lx.NEGATORS if " " in n)
_NEG_WORDS = frozenset(n for n in lx.NEGATORS if " " not in n)


def _is_negator(words: list[str]) -> bool:
    """Whether the few words before a cue word negate it."""
    if any(w in _NEG_WORDS or w.endswith("n't") for w in words):
        return True
    joined = " ".join(words)
    return any(pair in joined for pair in _NEG_PAIRS)


# ---------------------------------------------------------------- acoustic claims

@dataclass(frozen=True)
class Claim:
    """One thing a rationale says about the voice, in the level vocabulary."""

    cue: str
    """pitch, pitch_range, energy, rate, pause or intonation."""
    value: str
    span: tuple[int, int]
    """Character offsets of the words that make the claim."""
    text: str


def _back(toks: tuple[_Tok, ...], i: int, n: int) -> list[str]:
    """Up to `n` words before token i, nearest last, stopping at a barrier."""
    words: list[str] = []
    j = i - 1
    while j >= 0 and len(words) < n and not toks[j].barrier:
        words.append(toks[j].text)
        j -= 1
    return words[::-1]


def _negated(toks: tuple[_Tok, ...], i: int) -> bool:
    """A negator among the 3 words before token i, or 'nothing' among the 5 ('nothing in the
    delivery is loud')."""
    before = _back(toks, i, 5)
    return _is_negator(before[-3:]) or "nothing" in before


def _noun(toks: tuple[_Tok, ...], i: int) -> tuple[str, int] | None:
    """The noun class a level word at i describes and the noun's index: the noun right after
    it ('high pitch', the head of 'pitch range') or before it ('the pitch is quite high')."""
    j = i + 1
    while j < len(toks) and j <= i + 3 and not toks[j].barrier:
        word = toks[j].text
        if word in lx.NOUN_CLASSES:
            while j + 1 < len(toks) and toks[j + 1].text in lx.NOUN_CLASSES:
                j += 1
            return lx.NOUN_CLASSES[toks[j].text], j
        if word not in lx.MODIFIERS and word not in lx.LEVEL_WORDS:
            break
        j += 1
    j = i - 1
    while j >= 0 and j >= i - 6 and not toks[j].barrier:
        word = toks[j].text
        if word in lx.NOUN_CLASSES:
            return lx.NOUN_CLASSES[word], j
        if not (word in lx.FILLERS or word in lx.MODIFIERS or word in lx.LEVEL_WORDS
                or word in lx.NEGATORS):
            break
        j -= 1
    return None


def _resolve(toks: tuple[_Tok, ...], i: int) -> tuple[str, str, int] | None:
    """(cue, level, index of the deciding noun or i) for the level word at i, or None."""
    word = toks[i].text
    entry = lx.LEVEL_WORDS[word]
    found = _noun(toks, i)
    cls, j = found if found else (None, i)
    meaning = entry.get(cls) if cls else None
    if meaning is None:
        meaning, j = entry.get(lx.ANY_NOUN), i
    if meaning is None:
        return None
    cue, value = meaning
    if cue == "rate" and i + 1 < len(toks) and toks[i + 1].text in lx.RATE_WORDS_NOT_BEFORE:
        return None
    if value == "normal" and (any(t.text[0].isdigit() for t in toks[j + 1:j + 4])
                              or toks[i + 1:i + 2] and toks[i + 1].text in ("of", "for")):
        return None  # 'average pitch of 210 Hz', 'typical of anger': no level is claimed
    return cue, value, j


_CONTOUR_NOUNS = ("pitch", "voice", "intonation")


def _contour_context(toks: tuple[_Tok, ...], i: int) -> bool | None:
    """True when a direction word is about the intonation, False when it is about something
    else ('rising energy'), None when nothing says."""
    found = _noun(toks, i)
    if found:
        return found[0] in _CONTOUR_NOUNS
    near = toks[max(0, i - 4):i + 5]
    if any(t.text in lx.CONTOUR_CONTEXT or lx.NOUN_CLASSES.get(t.text) in _CONTOUR_NOUNS
           for t in near):
        return True
    return None


def _claim(text: str, toks: tuple[_Tok, ...], a: int, b: int, cue: str, value: str) -> Claim:
    lo, hi = min(a, b), max(a, b)
    start, end = toks[lo].start, toks[hi].end
    return Claim(cue, value, (start, end), text[start:end])


def _pause_value(toks: tuple[_Tok, ...], i: int) -> str:
    if _negated(toks, i):
        return "none"
    before = _back(toks, i, 3)
    after = toks[i + 1].text if i + 1 < len(toks) else ""
    if any(w in lx.MANY_PAUSES for w in before) or after in lx.MANY_PAUSES:
        return "many"
    return "some"


def _contour_pair(toks: tuple[_Tok, ...], i: int) -> tuple[int, bool] | None:
    """For 'rises (and) then falls': the index of the second direction word and whether the
    pair names a rise-fall / fall-rise shape ('then', 'before') or just movement ('rises and
    falls')."""
    j, ordered = i + 1, False
    while j < len(toks) and j <= i + 3 and toks[j].text in ("and", "then", "before", "again"):
        ordered = ordered or toks[j].text in ("then", "before")
        j += 1
    if j < len(toks) and lx.CONTOUR_WORDS.get(toks[j].text) not in (None, lx.CONTOUR_WORDS[toks[i].text]):
        return j, ordered
    return None


def acoustic_claims(text: str) -> list[Claim]:
    """What the text says about the voice: pitch, pitch range, loudness, rate, pauses and
    intonation, in the level names of the features stage. Negated claims are dropped ('not
    loud'), 'neither fast nor slow' claims normal, negated pauses claim none ('no pauses')."""
    _, toks = _read(text)
    claims: list[Claim] = []
    used: set[int] = set()
    for i, tok in enumerate(toks):
        word = tok.text
        if tok.barrier or i in used:
            continue
        if word in lx.PAUSE_WORDS:
            nxt = toks[i + 1].text if i + 1 < len(toks) else ""
            if nxt in lx.PAUSE_NOT_BEFORE or nxt in lx.PAUSE_WORDS:
                continue
            claims.append(_claim(text, toks, i, i, "pause", _pause_value(toks, i)))
        elif word in lx.FLUENT_WORDS:
            claims.append(_claim(text, toks, i, i, "pause", "some" if _negated(toks, i) else "none"))
        elif word == "drawn" and i + 1 < len(toks) and toks[i + 1].text == "out":
            used.add(i + 1)
            if not _negated(toks, i):
                claims.append(_claim(text, toks, i, i + 1, "rate", "slow"))
        elif word in lx.CONTOUR_WORDS:
            pair = _contour_pair(toks, i)
            if pair:
                j, ordered = pair
                used.add(j)
                if ordered and not _negated(toks, i):
                    shape = "rise-fall" if lx.CONTOUR_WORDS[word] == "rising" else "fall-rise"
                    claims.append(_claim(text, toks, i, j, "intonation", shape))
                continue
            if _contour_context(toks, i) and not _negated(toks, i):
                claims.append(_claim(text, toks, i, i, "intonation", lx.CONTOUR_WORDS[word]))
        elif word == "neither":
            claim = _neither_nor(text, toks, i, used)
            if claim:
                claims.append(claim)
        elif word in lx.LEVEL_WORDS:
            if _negated(toks, i):
                continue
            resolved = _resolve(toks, i)
            if resolved:
                cue, value, j = resolved
                claims.append(_claim(text, toks, i, j, cue, value))
    return claims


def _neither_nor(text: str, toks: tuple[_Tok, ...], i: int, used: set[int]) -> Claim | None:
    """'neither fast nor slow' -> a normal rate; other 'neither ... nor' phrases claim nothing."""
    def level_word(k: int) -> int | None:
        while k < len(toks) and toks[k].text in lx.MODIFIERS:
            k += 1
        return k if k < len(toks) and toks[k].text in lx.LEVEL_WORDS else None

    a = level_word(i + 1)
    if a is None or a + 1 >= len(toks) or toks[a + 1].text != "nor":
        return None
    b = level_word(a + 2)
    if b is None:
        return None
    used.update((a, b))
    first, second = _resolve(toks, a), _resolve(toks, b)
    if not first or not second or first[0] != second[0]:
        return None
    if not lx.contradicts(first[0], first[1], second[1]):
        return None
    return _claim(text, toks, i, max(b, first[2], second[2]), first[0], "normal")


# ---------------------------------------------------------------- grounding

def _measured(cues: ClipCues, cue: str) -> str | None:
    value = cues.levels.get(lx.CUE_FIELDS[cue])
    return value if value in lx.CUE_VALUES[cue] else None


def grounding(claims: list[Claim], cues: ClipCues) -> tuple[float, dict]:
    """Share of claims that agree with the measured levels, and which agree, contradict (the
    opposite was measured) or are unsupported (another level, or nothing, was measured)."""
    details: dict = {"n_claims": len(claims), "agree": [], "contradict": [], "unsupported": [],
                     "problems": []}
    for claim in claims:
        measured = _measured(cues, claim.cue)
        said = lx.describe(claim.cue, claim.value)
        if measured is None:
            details["unsupported"].append(f"{said} (not measured)")
        elif measured == claim.value or (claim.cue, claim.value, measured) in lx.COMPATIBLE:
            details["agree"].append(said)
        elif lx.contradicts(claim.cue, claim.value, measured):
            message = (f"it claims {said} but the measurement says "
                       f"{lx.describe(claim.cue, measured)}")
            details["contradict"].append(message)
            if message not in details["problems"]:
                details["problems"].append(message)
        else:
            details["unsupported"].append(f"{said} (measured: {lx.describe(claim.cue, measured)})")
    if not claims:
        details["problems"].append("it makes no acoustic claims about the voice")
        return 0.0, details
    return len(details["agree"]) / len(claims), details


# ---------------------------------------------------------------- leakage

_LEAK = re.compile("|".join((
    r"\b(?:the\s+)?(?:correct\s+|right\s+|final\s+)?answer\s+(?:is|would\s+be|here\s+is)\b",
    r"\banswer\s*:",
    r"\blabel\s*:",
    r"\b(?:the\s+)?label\s+(?:is|would\s+be)\b",
    r"\blabell?ed\s+(?:this|the|it)?\s*(?:clip|utterance|recording|sample)?\s*as\b",
    r"\bemotion\s*:",
    r"\bclassified\s+as\b",
    r"\bclassify\s+(?:it|this)\s+as\b",
    r"\bcategori[sz]ed\s+as\b",
    r"\bthe\s+(?:correct|right|true|target|gold|given|assigned)\s+(?:emotion|label|class|category)\b",
    r"\bground[- ]truth\b",
)), re.I)
"""Answer-style phrases: a rationale explains, it does not announce a label."""
_WORD = re.compile(r"[A-Za-z]+(?:['\u2019-][A-Za-z]+)*")


def leakage(text: str, label: str | None, lead_words: int) -> list[str]:
    """Ways the text gives the label away instead of working it out: answer-style phrases
    anywhere, or the label (one of its word forms) among the first `lead_words` words."""
    hits = []
    for m in _LEAK.finditer(text):
        hit = f'it says "{" ".join(m.group(0).split())}"'
        if hit not in hits:
            hits.append(hit)
    if label:
        forms = set(lx.label_forms(label))
        n = max(1, lead_words)
        for word in _WORD.findall(text)[:n]:
            if word.lower() in forms:
                hits.append(f'it names the emotion ("{word}") in its first {n} words')
                break
    return hits


# ---------------------------------------------------------------- implied label

EMOTION_WEIGHT, HINT_WEIGHT = 1.0, 0.4
"""An emotion word counts more than a voice description typical of an emotion."""
HEDGED, ABOUT_WORDS, CONCLUSION = 0.25, 0.5, 3.0
"""Factors for a hedged clause, a clause about what was said, and the concluding sentence."""


class _Phrases:
    """A set of words and phrases found by token look-up (hyphens count as spaces, as the
    tokens split unknown compounds) - much faster than one long regex alternation."""

    def __init__(self, phrases) -> None:
        self.phrases = {" ".join(p.replace("-", " ").split()) for p in phrases}
        lengths: dict[str, set[int]] = {}
        for phrase in self.phrases:
            words = phrase.split()
            lengths.setdefault(words[0], set()).add(len(words))
        self.lengths = {first: sorted(ns, reverse=True) for first, ns in lengths.items()}

    def at(self, toks: tuple[_Tok, ...], i: int, hi: int) -> str | None:
        """The longest phrase starting at token i and ending before token hi, if any."""
        for n in self.lengths.get(toks[i].text, ()):
            if i + n <= hi:
                phrase = " ".join(t.text for t in toks[i:i + n])
                if phrase in self.phrases:
                    return phrase
        return None

    def find(self, toks: tuple[_Tok, ...], lo: int = 0, hi: int | None = None):
        """(token index, phrase) for each non-overlapping match, left to right."""
        hi = len(toks) if hi is None else hi
        i = lo
        while i < hi:
            phrase = self.at(toks, i, hi)
            if phrase:
                yield i, phrase
                i += len(phrase.split())
            else:
                i += 1


def _emotion_table() -> dict[str, list[tuple[str, float]]]:
    """Emotion word or phrase -> the (label, weight) pairs it argues for."""
    table: dict[str, list[tuple[str, float]]] = {}
    for source, weight in ((lx.EMOTION_WORDS, EMOTION_WEIGHT), (lx.VOICE_HINTS, HINT_WEIGHT)):
        for label, words in source.items():
            for word in words:
                table.setdefault(" ".join(word.replace("-", " ").split()), []).append((label, weight))
    return table


_EMOTION_TABLE = _emotion_table()
_EMOTIONS = _Phrases(_EMOTION_TABLE)
_MINORITY = _Phrases(lx.MINORITY_MARKERS)
_HEDGES = _Phrases(h for h in lx.LOCAL_HEDGES if h != "instead")
_WORD_REFS = frozenset(lx.WORD_REFERENCES)
_SUBORDINATORS = _Phrases(lx.SUBORDINATORS)
_CONTRASTS = _Phrases(lx.CONTRASTS)
_SENTENCE_END = frozenset(".!?")


class _Clause(NamedTuple):
    start: int
    """Index of its first token."""
    sentence: int
    hedged: bool
    about_words: bool


def _spans(toks: tuple[_Tok, ...]):
    """(first token, end token, sentence index) of each clause: clauses end at punctuation
    and before a contrast or subordinating word ('but', 'although'); sentences at . ! ?"""
    lo, sentence = 0, 0
    for i, tok in enumerate(toks):
        if not tok.barrier:
            continue
        if tok.text[0].isalpha():  # a contrast word opens the next clause
            if i > lo:
                yield lo, i, sentence
            lo = i
            continue
        if i > lo:
            yield lo, i, sentence
        lo = i + 1
        if tok.text in _SENTENCE_END:
            sentence += 1
    if lo < len(toks):
        yield lo, len(toks), sentence


def _hedged(toks: tuple[_Tok, ...], lo: int, hi: int) -> bool:
    if next(_HEDGES.find(toks, lo, hi), None):
        return True
    return any(toks[i].text == "instead" and (i + 1 >= len(toks) or toks[i + 1].text != "of")
               for i in range(lo, hi))


def _clauses(toks: tuple[_Tok, ...]) -> list[_Clause]:
    """Clauses in order, each marked hedged (a minority reading, 'might', 'although') and
    whether it talks about the words rather than the voice. A minority marker hedges the rest
    of its sentence too, until a contrast ('but', 'overall') returns to the main reading."""
    out: list[_Clause] = []
    carry_sentence, carry = -1, False
    for lo, hi, sentence in _spans(toks):
        if sentence != carry_sentence or _CONTRASTS.at(toks, lo, hi):
            carry_sentence, carry = sentence, False
        minority = next(_MINORITY.find(toks, lo, hi), None) is not None
        hedged = carry or minority or _hedged(toks, lo, hi)
        if minority and not _SUBORDINATORS.at(toks, lo, hi):
            carry = True
        about_words = any(toks[i].text in _WORD_REFS for i in range(lo, hi))
        out.append(_Clause(lo, sentence, hedged, about_words))
    return out


def implied_label(text: str, label_set) -> tuple[str | None, dict[str, float]]:
    """The emotion the rationale argues for, from its emotion words and voice descriptions.

    Words count most in the concluding sentence (the last one that names an emotion without
    hedging), less in hedged clauses ('some listeners heard anger', 'might'), less in clauses
    about the words, and not at all when negated ('rather than anger'). Only labels in
    `label_set` count; None when no word points anywhere. A tie goes to the label named last.
    """
    _, toks = _read(text)
    scores = {label: 0.0 for label in label_set}
    clauses = _clauses(toks)
    starts = [c.start for c in clauses]
    hits = []  # (token index, label, weight, sentence, firm)
    for i, phrase in _EMOTIONS.find(toks):
        if _negated(toks, i):
            continue
        clause = clauses[max(0, bisect.bisect_right(starts, i) - 1)]
        factor = (HEDGED if clause.hedged else 1.0) * (ABOUT_WORDS if clause.about_words else 1.0)
        firm = not clause.hedged and not clause.about_words
        for label, weight in _EMOTION_TABLE[phrase]:
            if label in scores:
                hits.append((i, label, weight * factor, clause.sentence,
                             firm and weight == EMOTION_WEIGHT))
    conclusion = max((h[3] for h in hits if h[4]), default=None)
    last_seen: dict[str, int] = {}
    for position, label, weight, sentence, _ in hits:
        scores[label] += weight * (CONCLUSION if sentence == conclusion else 1.0)
        last_seen[label] = position
    best = max(scores.values(), default=0.0)
    if best <= 0:
        return None, scores
    top = [label for label, score in scores.items() if score == best]
    return max(top, key=lambda label: last_seen[label]), scores


# ---------------------------------------------------------------- verify

@dataclass(frozen=True)
class Verification:
    passed: bool
    text: str
    """The cleaned rationale that was checked (what should be kept)."""
    checks: dict = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    hint: str = ""
    """The problems in one line, for a retry prompt ('it claims high pitch but ...')."""


def verify(text: str | None, cues: ClipCues, cfg: VerifyConfig,
           expected_label: str | None = None) -> Verification:
    """Clean the rationale and check it: grounding (no contradiction, at least
    `cfg.min_claims` claims, share agreeing >= `cfg.min_grounding`), no leakage, the implied
    label is `expected_label` (default: the clip's consensus label), length within
    [`cfg.min_words`, `cfg.max_words`]."""
    expected = expected_label if expected_label is not None else cues.label
    clean = clean_rationale(text)
    if not clean:
        checks = {"grounding": 0.0, "n_claims": 0, "n_agree": 0, "contradictions": [],
                  "unsupported": [], "leakage": [], "implied_label": None,
                  "expected_label": expected, "label_scores": {}, "n_words": 0,
                  "grounding_ok": False, "leakage_ok": True, "consistency_ok": False,
                  "length_ok": False}
        return Verification(False, "", checks, ["it is empty"], "it is empty")
    claims = acoustic_claims(clean)
    score, details = grounding(claims, cues)
    leaks = leakage(clean, expected, cfg.lead_words)
    implied, scores = implied_label(clean, cues.label_set)
    n_words = len(clean.split())

    problems = list(details["problems"])
    if claims and len(claims) < cfg.min_claims:
        problems.append(f"it makes only {len(claims)} acoustic claim(s), at least {cfg.min_claims} needed")
    if claims and not details["contradict"] and score < cfg.min_grounding:
        problems.append(f"only {len(details['agree'])} of {len(claims)} voice claims match the "
                        f"measurements (unsupported: {', '.join(details['unsupported'])})")
    problems.extend(leaks)
    if implied != expected:
        problems.append(f"its conclusion points to {lx.emotion_noun(implied)} rather than "
                        f"{lx.emotion_noun(expected)}" if implied else
                        f"it never says which emotion the cues point to ({lx.emotion_noun(expected)})")
    if n_words < cfg.min_words:
        problems.append(f"it is too short ({n_words} words, at least {cfg.min_words})")
    elif n_words > cfg.max_words:
        problems.append(f"it is too long ({n_words} words, at most {cfg.max_words})")

    checks = {
        "grounding": score, "n_claims": len(claims), "n_agree": len(details["agree"]),
        "contradictions": details["contradict"], "unsupported": details["unsupported"],
        "leakage": leaks, "implied_label": implied, "expected_label": expected,
        "label_scores": scores, "n_words": n_words,
        "grounding_ok": (not details["contradict"] and score >= cfg.min_grounding
                         and len(claims) >= cfg.min_claims),
        "leakage_ok": not leaks,
        "consistency_ok": implied == expected,
        "length_ok": cfg.min_words <= n_words <= cfg.max_words,
    }
    passed = all(checks[k] for k in ("grounding_ok", "leakage_ok", "consistency_ok", "length_ok"))
    return Verification(passed, clean, checks, problems, "; ".join(problems))
