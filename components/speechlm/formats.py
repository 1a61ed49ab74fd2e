"""Prompts, target texts and the output parser of the SpeechLM, in one place.

What the model is asked (`build_prompt`), what it is trained to write (`format_target`) and how
its writing is read back (`parse_output`, `label_continuations`) must agree exactly, so all
four live here and the tests check each against the others.

Two target formats (`fmt`):
- `explain_after`: "Transcript: {transcript}\\nEmotion: {label}\\nRationale: {rationale}"
- `reason_first`: "<think>Transcript: {transcript}\\n{rationale}</think>\\n<answer>{label}</answer>"
  (the transcript is the first line of the reasoning: the model hears the words before it
  weighs them against the voice).

Two transcript sources (`transcript_source`):
- `model`: the model writes the transcript, as above;
- `asr`: the features stage's transcript is in the prompt and the target has no transcript
  ("Emotion: ...\\nRationale: ..." and "<think>{rationale}</think>\\n<answer>{label}</answer>").

A target without a rationale (rationale None, used for evaluation clips that have none) drops
the Rationale line, or the rationale inside <think> (the whole <think> block when nothing is
left in it). Transcripts, rationales and captions are free text: written on one line
(whitespace collapsed), so a line-start key ("Emotion: happy") can only come from the format
itself, and with their format tags and chat special tokens disarmed (`neutralise`), so words
that contain them neither abort training or prediction nor break the structure.

Perception tasks (`pitch`, `energy`, `rate`, `intonation`) ask one question about the voice;
their target is the measured level word alone ("high"), the shortest answer to score.
"""
from __future__ import annotations

import re
from functools import lru_cache

from components.distill.lexicon import emotion_words, label_forms
from components.features.captions import CONTOURS
from components.features.levels import TERTILE_LEVELS
from components.markup import (
    ANSWER_CLOSE,
    ANSWER_OPEN,
    FORMAT_TAG,
    SPECIAL_TOKEN,
    THINK_CLOSE,
    THINK_OPEN,
)

FORMATS = ("explain_after", "reason_first")
TRANSCRIPT_SOURCES = ("model", "asr")
SER_TASK = "ser"
PERCEPTION_TASKS: dict[str, tuple[str, tuple[str, ...]]] = {
    "pitch": ("What is the speaker's pitch level", TERTILE_LEVELS["pitch"][1]),
    "energy": ("What is the speaker's energy (loudness) level", TERTILE_LEVELS["energy"][1]),
    "rate": ("What is the speaker's speaking rate", TERTILE_LEVELS["rate"][1]),
    "intonation": ("What is the intonation contour of the utterance", CONTOURS),
}
"""Task -> (question, allowed answers): the answers are the level names of the features stage."""
TASKS = (SER_TASK, *PERCEPTION_TASKS)

SYSTEM_PROMPT = ("You are an expert listener. You hear a speech recording and judge the "
                 "speaker's emotion from what is said and how it is said.")
CUES_HINT = "pitch, loudness, speaking rate, pauses and intonation"
NO_TRANSCRIPT = "(no words recognised)"

_KEY = re.compile(
    r"^[ \t]*[-*_#>]*[ \t]*(transcript|emotion|label|rationale|reasoning|explanation)"
    r"[ \t]*[*_]*[ \t]*:[*_]*[ \t]*",
    re.IGNORECASE | re.MULTILINE,
)
_KEY_FIELD = {"transcript": "transcript", "emotion": "label", "label": "label",
              "rationale": "rationale", "reasoning": "rationale", "explanation": "rationale"}
_THINK = re.compile(
    f"{THINK_OPEN.pattern}(.*?)({THINK_CLOSE.pattern}|(?={ANSWER_OPEN.pattern})|\\Z)",
    re.IGNORECASE | re.DOTALL)
_ANSWER = re.compile(f"{ANSWER_OPEN.pattern}(.*?)({ANSWER_CLOSE.pattern}|\\Z)",
                     re.IGNORECASE | re.DOTALL)
_TRANSCRIPT_LINE = re.compile(r"\A\s*transcript\s*:[ \t]*([^\n]*)\n?", re.IGNORECASE)
_EDGE_PUNCT = ".,;:!?*\"'`()[]{}<>_- \t\n"


def _check_mode(fmt: str, transcript_source: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"unknown target format {fmt!r}; expected one of {FORMATS}")
    if transcript_source not in TRANSCRIPT_SOURCES:
        raise ValueError(f"unknown transcript_source {transcript_source!r}; "
                         f"expected one of {TRANSCRIPT_SOURCES}")


def neutralise(text: object, what: str, audio_token: str | None = None) -> str:
    """Free text (a transcript, rationale or caption) on one line, with what the format or
    the chat template would read as structure disarmed: a <think>/<answer> tag becomes
    "[think]" / "[/answer]", a chat special token (`<|im_end|>`, the `<|audio|>` placeholder)
    and `audio_token` lose their brackets ("[audio]"). A transcript is whatever was said (or
    what the ASR made of it): it must neither abort SFT or prediction nor close a block, add
    an audio slot or end the chat turn. An error only for non-text."""
    if not isinstance(text, str):
        raise TypeError(f"{what} must be a string, got {type(text).__name__}")
    if audio_token:
        text = text.replace(audio_token, " [audio] ")
    text = FORMAT_TAG.sub(
        lambda m: f"[{'/' if '/' in m.group(0) else ''}{m.group(1).lower()}]", text)
    text = SPECIAL_TOKEN.sub(lambda m: f"[{m.group(1).strip()}]", text)
    return " ".join(text.split())


def _label(value: object) -> str:
    """A label of the label set, whitespace collapsed; an error for non-text or markup (labels
    are configuration, not free text)."""
    if not isinstance(value, str):
        raise TypeError(f"label must be a string, got {type(value).__name__}")
    if FORMAT_TAG.search(value) or SPECIAL_TOKEN.search(value):
        raise ValueError(f"label {value[:80]!r} contains a tag or special token")
    return " ".join(value.split())


def _or_list(words: tuple[str, ...] | list[str]) -> str:
    return ", ".join(words[:-1]) + f" or {words[-1]}" if len(words) > 1 else words[0]


# ---------------------------------------------------------------- prompts
def _ser_instruction(fmt: str, transcript_source: str, labels: str) -> str:
    ask = ("Write what the speaker says, the emotion they express, and why."
           if transcript_source == "model" else "What emotion does the speaker express, and why?")
    choose = f"Choose the emotion from: {labels}."
    if fmt == "explain_after":
        lines = (["Transcript: <the words spoken>"] if transcript_source == "model" else []) + [
            "Emotion: <one label>",
            f"Rationale: <a few sentences on the words and on how they are said: {CUES_HINT}>",
        ]
        return "\n".join([ask, choose, "Answer in this form:", *lines])
    first = ('start with "Transcript: " and the words spoken, then weigh'
             if transcript_source == "model" else "weigh")
    return "\n".join([
        ask, choose,
        (f"First reason inside <think></think>: {first} the words against how they are said "
         f"({CUES_HINT}). Then give one label inside <answer></answer>."),
    ])


def build_prompt(task: str, fmt: str, transcript_source: str, transcript: str | None,
                 label_set: list[str] | tuple[str, ...], n_audio_tokens: int,
                 audio_token: str, prosody: str | None = None) -> list[dict]:
    """Chat messages (system, user) for one clip and task.

    The user message holds exactly `n_audio_tokens` adjacent copies of `audio_token` (where the
    model puts its soft audio tokens), then the instruction. For `ser` it lists `label_set`
    and, with transcript_source `asr`, the transcript. Perception prompts hold neither: their
    answer must come from the audio. `prosody` (a prosody caption, SER only) describes how the
    words are said as text; with it `n_audio_tokens` may be 0: the text-only zero-shot prompt.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    _check_mode(fmt, transcript_source)
    if prosody is not None and task != SER_TASK:
        raise ValueError("a prosody caption goes into SER prompts only: perception is heard")
    if isinstance(n_audio_tokens, bool) or not isinstance(n_audio_tokens, int) \
            or n_audio_tokens < (0 if prosody is not None else 1):
        raise ValueError(f"n_audio_tokens must be a positive integer (0 only with a prosody "
                         f"caption), got {n_audio_tokens!r}")
    if not isinstance(audio_token, str) or not audio_token.strip():
        raise ValueError(f"audio_token must be a non-empty string, got {audio_token!r}")
    parts = [f"Listen to this recording: {audio_token * n_audio_tokens}"] if n_audio_tokens else []
    if task == SER_TASK:
        labels = [_label(label) for label in label_set]
        if not labels or not all(labels):
            raise ValueError(f"label_set must hold non-empty labels, got {label_set!r}")
        if transcript_source == "asr":
            if transcript is None:
                raise ValueError("transcript_source 'asr' needs the transcript for the prompt")
            text = neutralise(transcript, "transcript", audio_token)
            parts.append(f"Transcript: {text or NO_TRANSCRIPT}")
        if prosody is not None:
            parts.append(f"How it is said: {neutralise(prosody, 'prosody caption', audio_token)}")
        parts.append(_ser_instruction(fmt, transcript_source, ", ".join(labels)))
    else:
        question, answers = PERCEPTION_TASKS[task]
        parts.append(f"{question}: {_or_list(answers)}? Answer with one word.")
    user = "\n\n".join(parts)
    if user.count(audio_token) != n_audio_tokens:
        raise ValueError(f"audio_token {audio_token!r} also occurs elsewhere in the prompt")
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


# ---------------------------------------------------------------- targets
def _target_parts(fmt: str, transcript_source: str, transcript: str | None, label: str,
                  rationale: str | None) -> tuple[str, str, str]:
    """(text before the label, label, text after it): one definition for targets and scoring."""
    _check_mode(fmt, transcript_source)
    label = _label(label)
    if not label:
        raise ValueError("label is empty")
    text = None
    if transcript_source == "model":
        if transcript is None:
            raise ValueError("transcript_source 'model' needs the transcript for the target")
        text = neutralise(transcript, "transcript")
    if rationale is not None:
        rationale = neutralise(rationale, "rationale")
        if not rationale:
            raise ValueError("rationale is empty (pass None for a target without one)")
    if fmt == "explain_after":
        before = (f"Transcript: {text}\n" if text is not None else "") + "Emotion: "
        return before, label, f"\nRationale: {rationale}" if rationale is not None else ""
    think = ([f"Transcript: {text}"] if text is not None else []) + \
        ([rationale] if rationale is not None else [])
    before = ("<think>" + "\n".join(think) + "</think>\n" if think else "") + "<answer>"
    return before, label, "</answer>"


def perception_target(task: str, level: str) -> str:
    """The answer of a perception task: the measured level word alone (e.g. 'high')."""
    if task not in PERCEPTION_TASKS:
        raise ValueError(f"{task!r} is not a perception task; expected one of "
                         f"{tuple(PERCEPTION_TASKS)}")
    answers = PERCEPTION_TASKS[task][1]
    if level not in answers:
        raise ValueError(f"{task} level {level!r} is not an answer ({_or_list(answers)})")
    return level


def format_target(task: str, fmt: str, transcript_source: str, transcript: str | None,
                  label: str, rationale: str | None) -> str:
    """The text the model learns to write. For a perception task `label` is the measured
    level and the target is `perception_target(task, label)`."""
    if task in PERCEPTION_TASKS:
        _check_mode(fmt, transcript_source)
        return perception_target(task, label)
    if task != SER_TASK:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    return "".join(_target_parts(fmt, transcript_source, transcript, label, rationale))


def answer_span(example: dict) -> tuple[int, int]:
    """Character span of the heard decision in an example's target: the label of a SER target
    (its rationale is often template text that follows from the label), or the whole answer
    of a perception task."""
    if example["task"] in PERCEPTION_TASKS:
        return 0, len(example["target"])
    before, label, _ = _target_parts(example["fmt"], example["transcript_source"],
                                     example["transcript"], example["label"], example["rationale"])
    return len(before), len(before) + len(label)


def label_first(fmt: str, transcript_source: str) -> bool:
    """The answer starts with the label ("Emotion: angry"): nothing the model writes comes
    before it, so the label can be scored right after the prompt."""
    return fmt == "explain_after" and transcript_source == "asr"


def label_continuations(fmt: str, transcript_source: str, label_set: list[str] | tuple[str, ...],
                        transcript: str | None = None,
                        rationale: str | None = None) -> dict[str, str]:
    """Label -> the target text from its start up to and including that label.

    Appended to the prompt, these score every label's probability in one batched forward
    pass. With `explain_after` + `asr` they depend on nothing the model writes
    ("Emotion: angry"); otherwise pass what precedes the label in the model's own output:
    its transcript (`model`) and, for `reason_first`, its rationale (None scores the form
    without reasoning, "<answer>angry").
    """
    out = {}
    for label in label_set:
        before, text, _ = _target_parts(fmt, transcript_source, transcript, label, rationale)
        out[label] = before + text
    return out


def split_label_tokens(tokenizer, texts: list[str]) -> tuple[list[int], list[list[int]]]:
    """(token ids of the text every label's continuation shares, then each continuation's
    remaining ids) of `texts`, the continuations of `label_continuations` in label order: the
    first remaining id is where the labels part, the one token that decides a one-token label."""
    ids = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
    shared = 0
    while all(len(i) > shared + 1 for i in ids) and len({i[shared] for i in ids}) == 1:
        shared += 1
    return ids[0][:shared], [i[shared:] for i in ids]


# ---------------------------------------------------------------- parsing
@lru_cache(maxsize=32)
def _label_lookup(label_set: tuple[str, ...]) -> tuple[dict[str, str], re.Pattern]:
    """(alias -> label, pattern finding any alias as whole words) for a label set.

    Aliases are a label's word forms and synonyms from the distill lexicon ('anger',
    'furious' -> angry); a label's own name wins over another label's alias.
    """
    aliases: dict[str, str] = {}
    for label in label_set:
        for word in emotion_words(label):
            aliases.setdefault(word.lower(), label)
    for label in label_set:
        for word in label_forms(label):
            aliases[word.lower()] = label
    for label in label_set:
        aliases[label.lower()] = label
    words = sorted(aliases, key=len, reverse=True)
    pattern = re.compile(r"(?<![\w-])(?:" + "|".join(map(re.escape, words)) + r")(?![\w-])",
                         re.IGNORECASE)
    return aliases, pattern


def _resolve(value: str | None, label_set: tuple[str, ...]) -> tuple[str | None, bool]:
    """(label, whether the whole value names it) for the text where a label should be."""
    if not value:
        return None, False
    aliases, pattern = _label_lookup(label_set)
    whole = " ".join(value.strip(_EDGE_PUNCT).split()).lower()
    if whole in aliases:
        return aliases[whole], True
    found = pattern.search(value)
    return (aliases[found.group(0).lower()] if found else None), False


def _clean(value: str | None) -> str | None:
    text = " ".join(value.split()) if value else ""
    return text or None


def _parse_explain_after(text: str) -> tuple[dict, bool, str | None]:
    """(fields, structure ok, text to look for a label in)."""
    bounds, seen, repeated = [], set(), False
    for match in _KEY.finditer(text):
        field = _KEY_FIELD[match.group(1).lower()]
        repeated |= field in seen
        if field not in seen:
            seen.add(field)
            bounds.append((field, match.start(), match.end()))
    if not bounds:
        return {}, False, text
    fields = {}
    for i, (field, _, end) in enumerate(bounds):
        stop = bounds[i + 1][1] if i + 1 < len(bounds) else len(text)
        fields[field] = text[end:stop]
    order = [field for field, _, _ in bounds]
    in_order = order == [f for f in ("transcript", "label", "rationale") if f in fields]
    ok = in_order and not repeated and "label" in fields and "rationale" in fields \
        and not text[:bounds[0][1]].strip()
    return fields, ok, fields.get("label")


def _parse_reason_first(text: str) -> tuple[dict, bool, str | None]:
    think, answer = _THINK.search(text), _ANSWER.search(text)
    fields: dict[str, str] = {}
    if think:
        content = think.group(1)
        line = _TRANSCRIPT_LINE.match(content)
        if line:
            fields["transcript"] = line.group(1)
            content = content[line.end():]
        fields["rationale"] = content
    if answer:
        fields["label"] = answer.group(1)
        label_text = answer.group(1)
    elif think:
        closed = THINK_CLOSE.search(text)
        label_text = text[closed.end():] if closed else None
    else:
        label_text = text
    ok = bool(think and answer and think.group(2) and answer.group(2)
              and think.end() <= answer.start()
              and not (text[:think.start()] + text[think.end():answer.start()]
                       + text[answer.end():]).strip())
    return fields, ok, label_text


def parse_output(text: object, fmt: str, label_set: list[str] | tuple[str, ...],
                 require_transcript: bool = False) -> dict:
    """Read a model output back: {transcript, label, rationale, well_formed}; never raises on
    the text.

    Tolerant: keys in any case, markdown emphasis, extra whitespace, unclosed tags, label
    synonyms and case ('Anger' -> 'angry' when 'angry' is in `label_set`). The label comes
    from the label field (Emotion: / <answer>); with no structure at all, from the first label
    word anywhere; with reasoning but no answer tag, from the text after </think>. None
    when no label of `label_set` is found.

    well_formed: the format's structure and nothing else (keys in order; <think> then
    <answer>, both closed), a non-empty rationale, a transcript when `require_transcript`,
    and a label field that as a whole names a label of the set.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown target format {fmt!r}; expected one of {FORMATS}")
    labels = tuple(label_set)
    if not labels:
        raise ValueError("label_set is empty")
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("utf-8", errors="replace")
    elif not isinstance(text, str):
        text = ""
    parse = _parse_explain_after if fmt == "explain_after" else _parse_reason_first
    fields, structured, label_text = parse(text)
    label, whole = _resolve(label_text, labels)
    transcript, rationale = _clean(fields.get("transcript")), _clean(fields.get("rationale"))
    well_formed = (structured and whole and rationale is not None
                   and (transcript is not None or not require_transcript))
    return {"transcript": transcript, "label": label, "rationale": rationale,
            "well_formed": bool(well_formed)}
