"""The rationale checker catches planted faults and lets a good rationale through."""
import math

import pytest

from components.config import VerifyConfig
from components.distill.records import ClipCues
from components.distill.verify import (
    acoustic_claims,
    clean_rationale,
    grounding,
    implied_label,
    leakage,
    verify,
)

LABELS = ("neutral", "calm", "happy", "sad", "angry", "fear", "disgust", "surprise")
SAD_LEVELS = {"pitch_level": "low", "pitch_range_level": "narrow", "energy_level": "low",
              "rate_level": "slow", "pause_level": "many", "intonation": "falling"}
GOOD_SAD = (
    'The voice is soft and the pitch sits low, moving within a narrow range. The words come '
    'slowly, long pauses break up the sentence and the intonation falls at the end. The words '
    '"I will send you the report" say little by themselves, so the voice carries the meaning. '
    'Some listeners heard anger instead, although nothing in the delivery is loud. Together '
    'these cues point to sadness.'
)


def sad_clip(**levels) -> ClipCues:
    return ClipCues(utt_id="clip1", transcript="I will send you the report", label="sad",
                    label_set=LABELS, minority=("angry",), levels={**SAD_LEVELS, **levels})


def claimed(text: str) -> set[tuple[str, str]]:
    return {(c.cue, c.value) for c in acoustic_claims(text)}


@pytest.mark.parametrize("text, expected", [
    ("The speaker sounds high-pitched and shrill.", {("pitch", "high")}),
    ("The pitch is quite low, a deep voice.", {("pitch", "low")}),
    ("She speaks with a raised pitch.", {("pitch", "high")}),
    ("He talks in a raised voice.", {("energy", "high")}),
    ("The delivery is loud and forceful.", {("energy", "high")}),
    ("A soft, hushed voice.", {("energy", "low")}),
    ("The energy is high and the pitch is low.", {("energy", "high"), ("pitch", "low")}),
    ("The words come rapidly.", {("rate", "fast")}),
    ("A slow, drawn out delivery.", {("rate", "slow")}),
    ("The pitch range is wide.", {("pitch_range", "wide")}),
    ("A monotone delivery.", {("pitch_range", "narrow")}),
    ("A flat delivery.", {("pitch_range", "narrow")}),
    ("The intonation stays flat.", {("intonation", "flat")}),
    ("Animated, varied pitch.", {("pitch_range", "wide")}),
    ("There are long pauses.", {("pause", "many")}),
    ("A brief pause in the middle.", {("pause", "some")}),
    ("The speech is fluent.", {("pause", "none")}),
    ("It is said without pausing.", {("pause", "none")}),
    ("The pitch rises at the end.", {("intonation", "rising")}),
    ("A falling intonation.", {("intonation", "falling")}),
    ("The pitch rises and then falls.", {("intonation", "rise-fall")}),
    ("A fall-rise contour.", {("intonation", "fall-rise")}),
    ("The intonation is expressive.", {("intonation", "expressive")}),
    # a caption echoed back
    ("pitch high, wide range, rising intonation; energy loud; rate fast; many pauses",
     {("pitch", "high"), ("pitch_range", "wide"), ("intonation", "rising"),
      ("energy", "high"), ("rate", "fast"), ("pause", "many")}),
])
def test_claims_are_read_in_the_level_vocabulary(text, expected):
    assert claimed(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("The voice is not loud.", set()),
    ("It is not particularly fast.", set()),
    ("The pace is neither fast nor slow.", {("rate", "normal")}),
    ("The pitch is neither high nor low.", {("pitch", "normal")}),
    ("There are no pauses.", {("pause", "none")}),
    ("The speaker never hesitates.", {("pause", "none")}),
    ("The delivery is not fluent.", {("pause", "some")}),
    ("The pitch is low, not high.", {("pitch", "low")}),
    ("Rather than loud, the voice is soft.", {("energy", "low")}),
])
def test_negated_claims_are_dropped_or_turned_around(text, expected):
    assert claimed(text) == expected


@pytest.mark.parametrize("text", [
    'The words "speak louder and faster please" carry the message.',  # quoted words
    "Its pause ratio is 0.12 and the average pitch of 210 Hz is typical.",  # numbers
    "The pitch rises and falls throughout.",  # movement, not a contour shape
    "A quick rise in energy.",  # not a speaking rate, not the intonation
    "A low voice carries the words.",  # quiet or deep: ambiguous
    "A normal day at the office.",  # no cue noun
])
def test_no_claim_where_none_is_made(text):
    assert claimed(text) == set()


def test_claim_spans_point_at_the_words():
    text = "In the end the pitch sits high."
    (claim,) = acoustic_claims(text)
    assert text[claim.span[0]:claim.span[1]] == claim.text == "pitch sits high"


def test_grounding_separates_agreeing_contradicting_and_unsupported_claims():
    cues = sad_clip(rate_level="normal", intonation="uncertain")
    claims = acoustic_claims("The pitch is high, the voice soft, the pace fast, and the "
                             "intonation falls at the end.")
    score, details = grounding(claims, cues)
    assert details["n_claims"] == 4
    assert details["agree"] == ["a soft voice"]
    assert details["contradict"] == ["it claims high pitch but the measurement says low pitch"]
    assert sorted(details["unsupported"]) == ["a fast pace (measured: a moderate pace)",
                                              "falling intonation (not measured)"]
    assert score == pytest.approx(1 / 4)


def test_some_pauses_agree_with_many_but_not_with_none():
    assert grounding(acoustic_claims("There are some pauses."), sad_clip())[0] == 1.0
    _, details = grounding(acoustic_claims("There are some pauses."), sad_clip(pause_level="none"))
    assert details["contradict"] == ["it claims some pauses but the measurement says no pauses"]


def test_no_claims_scores_zero_with_a_problem():
    score, details = grounding([], sad_clip())
    assert score == 0.0 and not math.isnan(score)
    assert details["problems"] == ["it makes no acoustic claims about the voice"]


def test_good_rationale_passes():
    result = verify(GOOD_SAD, sad_clip(), VerifyConfig())
    assert result.passed, result.problems
    assert result.problems == [] and result.hint == ""
    assert result.checks["implied_label"] == "sad"
    assert result.checks["grounding"] == 1.0
    assert result.checks["n_claims"] >= 5
    assert result.text == GOOD_SAD


def test_planted_contradiction_fails_grounding():
    text = GOOD_SAD.replace("the pitch sits low", "the pitch sits high")
    result = verify(text, sad_clip(), VerifyConfig())
    assert not result.passed
    assert not result.checks["grounding_ok"]
    assert result.checks["contradictions"] == ["it claims high pitch but the measurement says low pitch"]
    assert "it claims high pitch but the measurement says low pitch" in result.hint
    assert result.checks["leakage_ok"] and result.checks["consistency_ok"]


def test_too_few_or_mostly_unsupported_claims_fail_grounding():
    cfg = VerifyConfig(min_claims=2)
    one_claim = ("The voice is soft. " + "The clip is short and the words are ordinary ones "
                 "that say little by themselves, so the delivery matters most here. "
                 "Together these cues point to sadness.")
    result = verify(one_claim, sad_clip(), cfg)
    assert not result.checks["grounding_ok"]
    assert "at least 2 needed" in result.hint
    unsupported = GOOD_SAD.replace("soft", "moderately loud").replace("sits low", "is average")
    result = verify(unsupported, sad_clip(energy_level="normal", pitch_level="normal"),
                    VerifyConfig(min_grounding=0.9))
    assert not result.checks["grounding_ok"] and not result.checks["contradictions"]
    assert "voice claims match the measurements" in result.hint


@pytest.mark.parametrize("text", [
    "The answer is angry. " + GOOD_SAD,
    "Angry: the voice is soft and the pitch sits low, but the words come slowly. " + GOOD_SAD,
    "Anger is clear in how " + GOOD_SAD[0].lower() + GOOD_SAD[1:],
])
def test_leaks_of_the_label_fail(text):
    cues = ClipCues("clip2", "I will send you the report", "angry", LABELS, levels=SAD_LEVELS)
    result = verify(text, cues, VerifyConfig(), expected_label="angry")
    assert not result.checks["leakage_ok"]
    assert result.checks["leakage"]
    assert not result.passed


def test_leakage_phrases_and_the_first_words():
    assert leakage("Label: sad. The voice is soft.", "sad", 4) == [
        'it says "Label:"', 'it names the emotion ("sad") in its first 4 words']
    assert leakage("The voice is soft. Label: sad.", "sad", 4) == ['it says "Label:"']
    assert leakage("This clip was labelled as sad by the panel.", "sad", 4) == [
        'it says "labelled as"']
    assert leakage("Emotion: sadness, from the soft voice.", "sad", 4) == [
        'it says "Emotion:"', 'it names the emotion ("sadness") in its first 4 words']
    assert leakage("It is classified as sad.", "sad", 2) == ['it says "classified as"']
    assert leakage("The correct emotion here is clear.", "sad", 4) == [
        'it says "The correct emotion"']
    assert leakage("A soft voice, sadly trailing off.", "sad", 4) == [
        'it names the emotion ("sadly") in its first 4 words']
    assert leakage("A soft voice, sadly trailing off.", "sad", 3) == []
    assert leakage(GOOD_SAD, "sad", 4) == []


def test_a_rationale_for_another_emotion_fails_consistency():
    happy = ("The pitch sits low and the voice is soft, with long pauses and a slow pace. "
             "Still, the speaker sounds warm, cheerful and delighted with the news, smiling "
             "through the words. All of this points to happiness.")
    result = verify(happy, sad_clip(), VerifyConfig())
    assert result.checks["grounding_ok"] and result.checks["leakage_ok"]
    assert result.checks["implied_label"] == "happy"
    assert not result.checks["consistency_ok"] and not result.passed
    assert "its conclusion points to happiness rather than sadness" in result.hint
    assert verify(happy, sad_clip(), VerifyConfig(), expected_label="happy").passed


def test_length_bounds():
    short = "The voice is soft and slow. Together these cues point to sadness."
    result = verify(short, sad_clip(), VerifyConfig())
    assert not result.checks["length_ok"] and "too short (12 words, at least 30)" in result.hint
    long = GOOD_SAD + " " + " ".join(["The words come slowly and the voice stays soft."] * 12)
    result = verify(long, sad_clip(), VerifyConfig())
    assert not result.checks["length_ok"] and "too long" in result.hint
    assert result.checks["grounding_ok"] and result.checks["consistency_ok"]


@pytest.mark.parametrize("text", [
    "The voice is soft and slow. Some listeners heard anger, citing the clipped, harsh "
    "consonants and a tense edge. Overall, this is sadness.",
    "Although some might hear anger or even fury, the soft low voice points to sadness.",
    "The voice is soft and slow, which points to sadness. A minority of listeners chose "
    "anger instead, which the tense voice could support.",
    'On their own, the words "I hate you" might suggest anger, but the slow, soft voice '
    "outweighs them and conveys sadness.",
    "The speaker sounds sad, not angry.",
    "The delivery conveys sorrow rather than anger.",
])
def test_hedged_minority_and_negated_readings_do_not_flip_the_label(text):
    label, scores = implied_label(text, LABELS)
    assert label == "sad", scores


def test_implied_label_counts_only_the_label_set():
    text = "The voice sounds angry. Perhaps a little sad too."
    assert implied_label(text, LABELS)[0] == "angry"
    label, scores = implied_label(text, ("neutral", "sad"))
    assert label == "sad" and set(scores) == {"neutral", "sad"}
    assert implied_label("The pitch is low and the pace slow.", LABELS)[0] is None


def test_clean_rationale_strips_reasoning_and_markup():
    raw = ("<think>The pitch is low... so maybe sad?</think>\n**Rationale:** The voice "
           "is soft.<|im_end|>")
    assert clean_rationale(raw) == "The voice is soft."
    assert clean_rationale("Let me see. </think> Rationale: The voice is soft.") == "The voice is soft."
    assert clean_rationale("The voice is soft. <think>and then") == "The voice is soft."
    assert clean_rationale('"The voice is soft."') == "The voice is soft."
    assert clean_rationale("## Explanation:\nThe voice\n is soft.") == "The voice is soft."
    assert clean_rationale(None) == ""


def test_empty_or_unfinished_output_is_rejected():
    for text in ("", "   ", None, "<think>loud, fast, high pitch ..."):
        result = verify(text, sad_clip(), VerifyConfig())
        assert not result.passed and result.problems == ["it is empty"]


def test_verify_checks_the_cleaned_text():
    result = verify("<think>draft</think>Rationale: " + GOOD_SAD, sad_clip(), VerifyConfig())
    assert result.passed and result.text == GOOD_SAD


def test_hint_names_every_problem_in_one_line():
    text = "Sad: the pitch sits high and the voice is soft. Together these cues point to sadness."
    result = verify(text, sad_clip(), VerifyConfig())
    assert result.hint == "; ".join(result.problems)
    assert "\n" not in result.hint
    assert "it claims high pitch but the measurement says low pitch" in result.hint
    assert 'it names the emotion ("Sad") in its first 4 words' in result.hint
    assert "too short" in result.hint
