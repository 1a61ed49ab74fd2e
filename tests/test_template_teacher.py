"""The template teacher writes grounded, varied, deterministic rationales that pass `verify`."""
import itertools
import random
import re

import pytest

from components.cache_keys import code_hash
from components.config import TeacherConfig, VerifyConfig
from components.distill.lexicon import CUE_FIELDS, label_forms
from components.distill.records import ClipCues, TeacherRequest
from components.distill.template import TemplateTeacher, infer_label
from components.distill.verify import acoustic_claims, verify

LABELS = ("neutral", "calm", "happy", "sad", "angry", "fear", "disgust", "surprise", "boredom")


def levels(pitch="normal", pitch_range="normal", energy="normal", rate="normal", pause="none",
           intonation="uncertain") -> dict[str, str]:
    return {"pitch_level": pitch, "pitch_range_level": pitch_range, "energy_level": energy,
            "rate_level": rate, "pause_level": pause, "intonation": intonation}


PROTOTYPES = {
    "angry": levels(pitch="high", pitch_range="wide", energy="high", rate="fast", intonation="falling"),
    "happy": levels(pitch="high", pitch_range="wide", energy="high", intonation="expressive"),
    "sad": levels(pitch="low", pitch_range="narrow", energy="low", rate="slow", pause="many",
                  intonation="falling"),
    "fear": levels(pitch="high", pitch_range="narrow", rate="fast", pause="some"),
    "surprise": levels(pitch="high", pitch_range="wide", intonation="rising"),
    "neutral": levels(),
    "calm": levels(pitch="low", energy="low", pause="some", intonation="falling"),
    "disgust": levels(pitch="low", pitch_range="wide", rate="slow", pause="some", intonation="fall-rise"),
    "boredom": levels(pitch="low", pitch_range="narrow", energy="low", rate="slow", intonation="flat"),
}
TRANSCRIPTS = (
    "The train leaves from platform four at ten past nine.",  # no emotion in the words
    "How dare you lie to me again after everything!",  # angry words
    "What a wonderful day, the sun is shining at last.",  # happy words
    "",  # nothing recognised
)


def clip(utt_id: str, label: str, lv: dict, transcript: str = TRANSCRIPTS[0],
         minority=(), label_set=LABELS) -> ClipCues:
    return ClipCues(utt_id=utt_id, transcript=transcript, label=label, label_set=label_set,
                    minority=tuple(minority), levels=lv)


def write(cues: ClipCues, levels_shown: str = "salient", **request) -> str:
    (reply,) = TemplateTeacher(levels_shown).generate([TeacherRequest(cues.utt_id, (), cues,
                                                                      **request)])
    assert reply.error is None
    return reply.text


@pytest.mark.parametrize("label", sorted(PROTOTYPES))
def test_rationales_for_every_emotion_pass_verification(label):
    minorities = [(), ("angry", "fear"), ("happy",)]
    for k, (transcript, minority) in enumerate(itertools.product(TRANSCRIPTS, minorities)):
        cues = clip(f"{label}-{k}", label, PROTOTYPES[label], transcript, minority)
        result = verify(write(cues), cues, VerifyConfig())
        assert result.passed, (result.text, result.problems)
        assert result.checks["implied_label"] == label
        assert result.checks["grounding"] == 1.0


def test_same_clip_same_text_and_a_hint_changes_nothing():
    cues = clip("clip-7", "sad", PROTOTYPES["sad"], minority=("angry",))
    first = write(cues)
    assert write(cues) == first
    assert write(cues, hint="it claims high pitch but the measurement says low pitch") == first
    messages = ({"role": "user", "content": "ignored by the template"},)
    (reply,) = TemplateTeacher().generate([TeacherRequest("clip-7", messages, cues)])
    assert reply.text == first


def test_different_clips_get_different_wording():
    texts = {write(clip(f"clip-{i}", "angry", PROTOTYPES["angry"])) for i in range(20)}
    assert len(texts) >= 10


@pytest.mark.parametrize("levels_shown", ["salient", "all"])
def test_every_level_combination_is_grounded_and_within_length(levels_shown):
    rng = random.Random(0)
    values = {"pitch_level": ("low", "normal", "high", "unknown"),
              "pitch_range_level": ("narrow", "normal", "wide", "unknown"),
              "energy_level": ("low", "normal", "high", "unknown"),
              "rate_level": ("slow", "normal", "fast", "unknown"),
              "pause_level": ("none", "some", "many", "unknown"),
              "intonation": ("rising", "falling", "rise-fall", "fall-rise", "flat", "expressive",
                             "uncertain", "too_short")}
    for i in range(300):
        lv = {key: rng.choice(options) for key, options in values.items()}
        if all(v in ("unknown", "uncertain", "too_short") for v in lv.values()):
            continue
        label = rng.choice(LABELS)
        cues = clip(f"combo-{i}", label, lv, rng.choice(TRANSCRIPTS) * rng.choice((1, 3)),
                    minority=rng.choice([(), (rng.choice(LABELS),)]))
        text = write(cues, levels_shown)
        n_words = len(text.split())
        assert 30 <= n_words <= 120, text
        assert 3 <= len(re.findall(r"[.!?](?:\s|$)", re.sub(r'"[^"]*"', "Q", text))) <= 4, text
        claims = acoustic_claims(text)
        assert claims, text
        for c in claims:  # every claim is a level that was measured, and the right one
            assert lv[CUE_FIELDS[c.cue]] == c.value, (c, text)
        for word in ("unknown", "uncertain", "not measured", "too_short"):
            assert word not in text
        assert not any(w.strip(",.").lower() in label_forms(label) for w in text.split()[:4])


def test_normal_levels_are_left_out_when_others_stand_out():
    lv = levels(energy="high", rate="fast", intonation="falling")
    text = write(clip("clip-n", "angry", lv, minority=("fear",)))
    assert {c.cue for c in acoustic_claims(text)} <= {"energy", "rate", "intonation"}


@pytest.mark.parametrize("label", sorted(PROTOTYPES))
def test_all_levels_names_the_normal_ones_too_and_stays_grounded(label):
    lv = {**PROTOTYPES[label], "energy_level": "normal", "rate_level": "normal"}
    cues = clip(f"all-{label}", label, lv, minority=("fear",) if label != "fear" else ())
    text = write(cues, "all")
    claims = {(c.cue, c.value) for c in acoustic_claims(text)}
    assert {("energy", "normal"), ("rate", "normal")} <= claims, text
    assert all(lv[CUE_FIELDS[cue]] == value for cue, value in claims), text
    result = verify(text, cues, VerifyConfig())
    assert result.passed, (text, result.problems)
    assert result.checks["implied_label"] == label
    salient = {c.cue for c in acoustic_claims(write(cues))}
    if any(v not in ("normal", "none") for k, v in lv.items() if k != "intonation"):
        assert "energy" not in salient and "rate" not in salient


def test_the_levels_setting_is_part_of_the_cache_key_and_is_checked():
    assert TemplateTeacher("all").config() != TemplateTeacher().config()
    assert TemplateTeacher().config()["levels"] == "salient"
    with pytest.raises(ValueError, match="template_levels"):
        TeacherConfig(template_levels="every")


def test_only_normal_levels_are_described_when_nothing_stands_out():
    text = write(clip("clip-flat", "neutral", levels()))
    assert {(c.cue, c.value) for c in acoustic_claims(text)} == {
        ("pitch", "normal"), ("pitch_range", "normal"), ("energy", "normal"),
        ("rate", "normal"), ("pause", "none")}


def test_words_that_disagree_with_the_voice_are_outweighed():
    cues = clip("clip-w", "sad", PROTOTYPES["sad"], transcript=TRANSCRIPTS[2])
    text = write(cues)
    assert '"What a wonderful day, the sun is shining at last"' in text
    assert "happiness" in text and ("outweighs" in text or "matters more" in text)
    assert text.rstrip(".").endswith("sadness")
    assert verify(text, cues, VerifyConfig()).passed


def test_minority_reading_is_mentioned_with_a_measured_cue():
    cues = clip("clip-m", "angry", PROTOTYPES["angry"], minority=("fear",))
    text = write(cues)
    assert "fear" in text
    assert "high pitch" in text or "a fast pace" in text


def test_nothing_measured_is_an_error_reply():
    cues = clip("clip-x", "sad", {"pitch_level": "unknown", "intonation": "too_short"})
    (reply,) = TemplateTeacher().generate([TeacherRequest("clip-x", (), cues)])
    assert reply.text is None and "no voice cue was measured" in reply.error


@pytest.mark.parametrize("lv, label_set, expected", [
    (levels(pitch="high", pitch_range="wide", energy="high", rate="fast"), LABELS, "angry"),
    (levels(pitch="low", pitch_range="narrow", energy="low", rate="slow", pause="many"), LABELS, "sad"),
    (levels(pitch="high", pitch_range="wide", intonation="rising"), LABELS, "surprise"),
    (levels(), LABELS, "neutral"),
    (levels(pitch="high", pitch_range="wide", energy="high", rate="fast"),
     ("neutral", "happy", "sad"), "happy"),
])
def test_unhinted_pass_infers_the_label_from_prototypes(lv, label_set, expected):
    cues = clip("clip-u", "neutral", lv, label_set=label_set, minority=("calm",))
    assert infer_label(cues) == expected
    text = write(cues, with_label=False)
    result = verify(text, cues, VerifyConfig(), expected_label=expected)
    assert result.passed, result.problems
    assert "calm" not in text  # the minority vote is not shown without the label


def test_transcript_words_break_ties_only():
    lv = {"pitch_level": "high"}  # fits happy and fear equally
    plain = clip("t1", "neutral", lv, transcript=TRANSCRIPTS[0], label_set=("happy", "fear"))
    scared = clip("t2", "neutral", lv, transcript="I am terrified, please help", label_set=("happy", "fear"))
    assert infer_label(plain) == "happy" and infer_label(scared) == "fear"
    loud = clip("t3", "neutral", PROTOTYPES["angry"], transcript="I am terrified, please help")
    assert infer_label(loud) == "angry"


def test_config_names_the_backend_and_the_hash_of_its_code():
    config = TemplateTeacher().config()
    assert config["name"] == TemplateTeacher.name == "template"
    assert config["code"] == code_hash("components.distill.template")
