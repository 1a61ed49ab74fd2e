"""Prompts, targets and the output parser agree with each other, and the parser is tolerant."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from components.speechlm.formats import (
    FORMATS,
    PERCEPTION_TASKS,
    TRANSCRIPT_SOURCES,
    answer_span,
    build_prompt,
    format_target,
    label_continuations,
    parse_output,
    perception_target,
)

LABELS = ("neutral", "happy", "sad", "angry", "fear", "surprise")
MODES = [(f, s) for f in FORMATS for s in TRANSCRIPT_SOURCES]
TRANSCRIPT = "I got the job, I can hardly believe it!"
RATIONALE = "The pitch is high and the voice loud. The words are good news."
AUDIO = "<|audio|>"


@pytest.mark.parametrize("fmt, source, expected", [
    ("explain_after", "model",
     f"Transcript: {TRANSCRIPT}\nEmotion: happy\nRationale: {RATIONALE}"),
    ("explain_after", "asr", f"Emotion: happy\nRationale: {RATIONALE}"),
    ("reason_first", "model",
     f"<think>Transcript: {TRANSCRIPT}\n{RATIONALE}</think>\n<answer>happy</answer>"),
    ("reason_first", "asr", f"<think>{RATIONALE}</think>\n<answer>happy</answer>"),
])
def test_target_strings(fmt, source, expected):
    assert format_target("ser", fmt, source, TRANSCRIPT, "happy", RATIONALE) == expected


@pytest.mark.parametrize("fmt, source, expected", [
    ("explain_after", "model", f"Transcript: {TRANSCRIPT}\nEmotion: sad"),
    ("explain_after", "asr", "Emotion: sad"),
    ("reason_first", "model", f"<think>Transcript: {TRANSCRIPT}</think>\n<answer>sad</answer>"),
    ("reason_first", "asr", "<answer>sad</answer>"),
])
def test_label_only_target_strings(fmt, source, expected):
    assert format_target("ser", fmt, source, TRANSCRIPT, "sad", None) == expected


def test_target_text_is_collapsed_to_one_line():
    target = format_target("ser", "explain_after", "model", " I  got\nit ", "happy",
                           "Loud.\n\nEmotion: sad is not it.")
    assert target == ("Transcript: I got it\nEmotion: happy\n"
                      "Rationale: Loud. Emotion: sad is not it.")
    assert parse_output(target, "explain_after", LABELS)["label"] == "happy"


@pytest.mark.parametrize("kwargs, message", [
    ({"fmt": "json"}, "unknown target format"),
    ({"transcript_source": "oracle"}, "unknown transcript_source"),
    ({"transcript": None}, "needs the transcript"),
    ({"rationale": "  "}, "rationale is empty"),
    ({"label": " "}, "label is empty"),
    ({"task": "gender"}, "unknown task"),
])
def test_target_errors(kwargs, message):
    args = {"task": "ser", "fmt": "reason_first", "transcript_source": "model",
            "transcript": TRANSCRIPT, "label": "happy", "rationale": RATIONALE, **kwargs}
    with pytest.raises(ValueError, match=message):
        format_target(**args)


@pytest.mark.parametrize("fmt, source", MODES)
@pytest.mark.parametrize("label", LABELS)
def test_parser_round_trips_every_target(fmt, source, label):
    target = format_target("ser", fmt, source, TRANSCRIPT, label, RATIONALE)
    parsed = parse_output(target, fmt, LABELS, require_transcript=source == "model")
    assert parsed == {
        "transcript": TRANSCRIPT if source == "model" else None,
        "label": label, "rationale": RATIONALE, "well_formed": True,
    }


@pytest.mark.parametrize("fmt, source", MODES)
def test_label_only_target_parses_its_label_but_is_not_well_formed(fmt, source):
    parsed = parse_output(format_target("ser", fmt, source, TRANSCRIPT, "fear", None), fmt,
                          LABELS)
    assert parsed["label"] == "fear" and parsed["rationale"] is None
    assert parsed["well_formed"] is False


@pytest.mark.parametrize("text, fmt, label, well_formed", [
    ("emotion: ANGER\nrationale: loud", "explain_after", "angry", True),
    ("  **Emotion:**  Happiness. \n**Rationale:** bright voice", "explain_after", "happy", True),
    ("Emotion: Furious\nRationale: shouting", "explain_after", "angry", True),
    ("Label: sad\nExplanation: low and slow", "explain_after", "sad", True),
    ("Emotion: angry, maybe sad\nRationale: loud", "explain_after", "angry", False),
    ("<THINK> slow, soft </THINK>\n\n< answer > Sadness </answer>", "reason_first", "sad", True),
    ("<think>loud</think><answer>angry", "reason_first", "angry", False),
    ("<think>loud</think> so: angry", "reason_first", "angry", False),
    ("The speaker sounds frightened to me.", "explain_after", "fear", False),
    ("The speaker sounds frightened to me.", "reason_first", "fear", False),
])
def test_parser_tolerates_case_synonyms_and_markup(text, fmt, label, well_formed):
    parsed = parse_output(text, fmt, LABELS)
    assert (parsed["label"], parsed["well_formed"]) == (label, well_formed)


@pytest.mark.parametrize("text, fmt", [
    ("Emotion: happy", "explain_after"),                                   # no rationale
    ("Rationale: bright\nEmotion: happy", "explain_after"),                # wrong order
    ("Sure! Here it is.\nEmotion: happy\nRationale: bright", "explain_after"),  # chatter first
    ("Emotion: happy\nRationale:   ", "explain_after"),                    # empty rationale
    ("<answer>happy</answer>", "reason_first"),                            # no reasoning
    ("<answer>happy</answer><think>bright</think>", "reason_first"),       # wrong order
    ("<think>bright</think>\n<answer>happy</answer> and more", "reason_first"),  # trailing text
    ("<think></think><answer>happy</answer>", "reason_first"),             # empty reasoning
])
def test_broken_structure_is_not_well_formed(text, fmt):
    parsed = parse_output(text, fmt, LABELS)
    assert parsed["label"] == "happy"
    assert parsed["well_formed"] is False


@pytest.mark.parametrize("text, fmt", [
    ("Emotion: calm\nRationale: relaxed", "explain_after"),   # calm is not in the set
    ("Emotion: \nRationale: loud and fast", "explain_after"),
    ("<think>it sounds angry but", "reason_first"),           # reasoning never closed
    ("<think>loud</think><answer>no idea</answer>", "reason_first"),
    ("", "explain_after"),
])
def test_no_label_found_gives_none(text, fmt):
    parsed = parse_output(text, fmt, LABELS)
    assert parsed["label"] is None and parsed["well_formed"] is False


def test_require_transcript():
    text = "Emotion: sad\nRationale: slow and soft"
    assert parse_output(text, "explain_after", LABELS)["well_formed"] is True
    assert parse_output(text, "explain_after", LABELS, require_transcript=True)["well_formed"] \
        is False


def test_own_label_name_wins_over_another_labels_synonym():
    # 'excited' is a synonym of happy in the lexicon; as a label of the set it is itself
    labels = ("excited", "happy", "sad")
    assert parse_output("Emotion: Excited\nRationale: x", "explain_after", labels)["label"] \
        == "excited"
    assert parse_output("Emotion: joyful\nRationale: x", "explain_after", labels)["label"] \
        == "happy"


_PIECES = st.sampled_from([
    "<think>", "</think>", "<answer>", "</answer>", "< /answer >", "Emotion:", "emotion :",
    "Transcript:", "Rationale:", "**", "\n", " ", "angry", "Happiness", "calm", "<", ">", ":",
    "\x00", "\u202e", "\ud800", "😀",
])


@settings(max_examples=300, deadline=None, database=None)
@given(text=st.one_of(st.none(), st.text(), st.binary(),
                      st.lists(st.one_of(_PIECES, st.text(max_size=5)), max_size=30)
                      .map("".join)),
       fmt=st.sampled_from(FORMATS), require=st.booleans())
def test_parser_never_raises(text, fmt, require):
    parsed = parse_output(text, fmt, LABELS, require_transcript=require)
    assert set(parsed) == {"transcript", "label", "rationale", "well_formed"}
    assert parsed["label"] is None or parsed["label"] in LABELS
    assert isinstance(parsed["well_formed"], bool)
    assert parsed["transcript"] is None or isinstance(parsed["transcript"], str)
    assert parsed["rationale"] is None or isinstance(parsed["rationale"], str)
    if parsed["well_formed"]:
        assert parsed["label"] is not None and parsed["rationale"]


def test_parser_rejects_a_bad_configuration():
    with pytest.raises(ValueError, match="unknown target format"):
        parse_output("Emotion: sad", "yaml", LABELS)
    with pytest.raises(ValueError, match="label_set is empty"):
        parse_output("Emotion: sad", "explain_after", [])


@pytest.mark.parametrize("fmt, source", MODES)
def test_ser_prompt(fmt, source):
    messages = build_prompt("ser", fmt, source, TRANSCRIPT, LABELS, 28, AUDIO)
    assert [m["role"] for m in messages] == ["system", "user"]
    user = messages[1]["content"]
    assert user.count(AUDIO) == 28 and AUDIO * 28 in user
    assert "neutral, happy, sad, angry, fear, surprise" in user
    assert (f"Transcript: {TRANSCRIPT}" in user) == (source == "asr")
    assert ("<think>" in user) == (fmt == "reason_first")
    assert ("Rationale:" in user) == (fmt == "explain_after")
    assert AUDIO not in messages[0]["content"]


def test_asr_prompt_with_an_empty_transcript_says_so():
    user = build_prompt("ser", "explain_after", "asr", "", LABELS, 1, AUDIO)[1]["content"]
    assert "Transcript: (no words recognised)" in user


@pytest.mark.parametrize("task, question", [
    ("pitch", "What is the speaker's pitch level: low, normal or high?"),
    ("energy", "What is the speaker's energy (loudness) level: low, normal or high?"),
    ("rate", "What is the speaker's speaking rate: slow, normal or fast?"),
    ("intonation", ("What is the intonation contour of the utterance: rising, falling, "
                    "rise-fall, fall-rise, flat or expressive?")),
])
def test_perception_prompt(task, question):
    user = build_prompt(task, "reason_first", "asr", TRANSCRIPT, LABELS, 5, AUDIO)[1]["content"]
    assert user == f"Listen to this recording: {AUDIO * 5}\n\n{question} Answer with one word."


@pytest.mark.parametrize("kwargs, message", [
    ({"task": "speaker"}, "unknown task"),
    ({"n_audio_tokens": 0}, "positive integer"),
    ({"n_audio_tokens": 2.0}, "positive integer"),
    ({"audio_token": ""}, "non-empty string"),
    ({"audio_token": "<AUD>", "label_set": ["happy", "<AUD>"]}, "occurs elsewhere"),
    ({"label_set": []}, "non-empty labels"),
    ({"transcript": None}, "needs the transcript"),
    ({"fmt": "xml"}, "unknown target format"),
    ({"n_audio_tokens": -1, "prosody": "pitch high"}, "positive integer"),
    ({"task": "pitch", "prosody": "pitch high"}, "SER prompts only"),
])
def test_prompt_errors(kwargs, message):
    args = {"task": "ser", "fmt": "explain_after", "transcript_source": "asr",
            "transcript": TRANSCRIPT, "label_set": LABELS, "n_audio_tokens": 4,
            "audio_token": AUDIO, **kwargs}
    with pytest.raises(ValueError, match=message):
        build_prompt(**args)


def test_perception_targets():
    for task, (_, answers) in PERCEPTION_TASKS.items():
        for level in answers:
            assert perception_target(task, level) == level
            assert format_target(task, "explain_after", "asr", None, level, None) == level
    with pytest.raises(ValueError, match="not an answer"):
        perception_target("pitch", "unknown")
    with pytest.raises(ValueError, match="not an answer"):
        perception_target("intonation", "too_short")
    with pytest.raises(ValueError, match="not a perception task"):
        perception_target("ser", "high")


@pytest.mark.parametrize("fmt, source", MODES)
@pytest.mark.parametrize("rationale", [RATIONALE, None])
def test_label_continuations_are_target_prefixes(fmt, source, rationale):
    continuations = label_continuations(fmt, source, LABELS, TRANSCRIPT, rationale)
    assert list(continuations) == list(LABELS)
    for label, text in continuations.items():
        target = format_target("ser", fmt, source, TRANSCRIPT, label, rationale)
        assert target.startswith(text) and text.endswith(label)
    # the continuations share everything before the label
    stems = {text[: -len(label)] for label, text in continuations.items()}
    assert len(stems) == 1


def test_label_continuations_without_model_output():
    assert label_continuations("explain_after", "asr", ["sad", "angry"]) == {
        "sad": "Emotion: sad", "angry": "Emotion: angry"}
    assert label_continuations("reason_first", "asr", ["sad"], rationale="Slow.") == {
        "sad": "<think>Slow.</think>\n<answer>sad"}
    with pytest.raises(ValueError, match="needs the transcript"):
        label_continuations("explain_after", "model", ["sad"])


def test_text_only_prompt_carries_transcript_and_caption():
    caption = "pitch high, wide range, rising intonation; energy high; rate fast"
    user = build_prompt("ser", "explain_after", "asr", TRANSCRIPT, LABELS, 0, AUDIO,
                        prosody=caption)[1]["content"]
    assert AUDIO not in user and "Listen to this recording" not in user
    assert f"Transcript: {TRANSCRIPT}\n\nHow it is said: {caption}\n\n" in user
    with_audio = build_prompt("ser", "explain_after", "asr", TRANSCRIPT, LABELS, 3, AUDIO,
                              prosody=caption)[1]["content"]
    assert with_audio.count(AUDIO) == 3 and "How it is said" in with_audio


@pytest.mark.parametrize("fmt, source", MODES)
def test_answer_span_is_the_label_in_every_mode(fmt, source):
    target = format_target("ser", fmt, source, TRANSCRIPT, "happy", RATIONALE)
    example = {"task": "ser", "fmt": fmt, "transcript_source": source, "transcript": TRANSCRIPT,
               "label": "happy", "rationale": RATIONALE, "target": target}
    start, end = answer_span(example)
    assert target[start:end] == "happy"
    assert answer_span({"task": "pitch", "target": "high"}) == (0, 4)
