"""Self-correction at inference: follow-ups filled in from the clip, each round given the whole
chat so far, the served answer is the last round's, and flips counted clip by clip."""
import pandas as pd
import pytest
from scipy.stats import binomtest

from components.config import CONTROL, RECHECK, ConfigError, params_from_dict
from components.evaluate.refinement import flips
from components.serve.predictor import ClipInput, followup, load_predictor

LABELS = ["angry", "happy", "sad"]


def _clip(**cues) -> ClipInput:
    return ClipInput(transcript="I <think>told</think> you so", caption="", cues=cues)


def test_a_followup_names_the_clips_measured_levels_and_words():
    clip = _clip(pitch_level="high", pitch_range_level="wide", energy_level="loud",
                 rate_level="fast", pause_level="few", intonation=None)
    text = followup("pitch {pitch}, range {pitch_range}, energy {energy}, rate {rate}, "
                    "pauses {pauses}, contour {intonation}: \"{transcript}\"", clip)
    assert text == ("pitch high, range wide, energy loud, rate fast, pauses few, contour "
                    "unknown: \"I [think]told[/think] you so\"")  # tags in words are disarmed
    assert followup(RECHECK, clip) == RECHECK  # no fields: as is
    with pytest.raises(ValueError, match="unknown field 'loudness'.*pitch_range"):
        followup("the {loudness}", clip)


def test_the_control_asks_for_nothing_at_about_the_recheck_length():
    from transformers import AutoTokenizer

    from components.models.bundled import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("bundled:smollm2-135m-instruct"))
    n = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in (RECHECK, CONTROL)]
    assert abs(n[0] - n[1]) <= 3, n
    assert "?" not in CONTROL and "correct" not in CONTROL


@pytest.mark.parametrize("section, match", [
    ({"self_correct_rounds": -1}, "self_correct_rounds must be >= 0"),
    ({"self_correct_instruction": "louder"}, "'louder' is not one of"),
])
def test_bad_inference_settings_are_refused(section, match):
    with pytest.raises(ConfigError, match=match):
        params_from_dict({"inference": section})


def test_flips_are_counted_on_consensus_clips_with_an_exact_mcnemar_test():
    gold = pd.DataFrame({
        "utt_id": list("abcdefgh"),
        "label": ["angry", "angry", "happy", "sad", "sad", "happy", "angry", ""],
        "annotator_labels": [["angry"]] * 7 + [["sad", "happy"]],
    })
    before = pd.DataFrame({"utt_id": list("abcdefgh"),
                           "label": ["angry", "sad", "sad", "sad", "happy", "angry", "sad",
                                     "sad"]})
    after = pd.DataFrame({"utt_id": list("abcdefgh"),
                          "label": ["happy", "angry", "happy", "sad", "happy", "sad", "angry",
                                    "happy"]})
    result = flips(gold, before, after, LABELS)
    # a right->wrong; b, c, g wrong->right; d right kept; e wrong kept; f wrong changed;
    # h has no consensus: not in the table, but its label changed
    assert {k: result[k] for k in ("wrong_to_right", "right_to_wrong", "right_kept",
                                   "wrong_kept", "wrong_changed", "label_changed")} == {
        "wrong_to_right": 3, "right_to_wrong": 1, "right_kept": 1, "wrong_kept": 1,
        "wrong_changed": 1, "label_changed": 6}
    assert result["mcnemar_p"] == pytest.approx(binomtest(3, 4, 0.5).pvalue)
    assert flips(gold, before, before, LABELS)["mcnemar_p"] == 1.0


@pytest.mark.slow
def test_each_round_sees_the_whole_chat_and_serving_answers_with_the_last(trained, pipeline):
    from components.serve.predictor import clips_from_features, frames_of

    root, df, feats, *_ = pipeline
    predictor = load_predictor(trained, max_new_tokens=8)
    rows = feats[feats["utt_id"].isin(df[df["split"] == "test"]["utt_id"])].head(3)
    clips = clips_from_features(rows, frames_of(root / "features" / "frames",
                                                rows["utt_id"].tolist()), predictor)
    first = predictor.predict_clips(clips)
    seen = []
    original = predictor._predict_batch

    def spy(batch, rationale, histories=None):
        seen.append(histories)
        return original(batch, rationale, histories)

    predictor._predict_batch = spy
    template = "Energy was {energy}. Check again."
    rounds = predictor.self_correct(clips, first, template, rounds=2, batch_size=2)
    assert len(rounds) == 2 and all(len(r) == 3 for r in rounds)
    # batches of 2 and 1 per round; round 2 carries round 1's answer after the first one
    texts = [followup(template, c) for c in clips]
    assert seen[0] == [[(first[0]["output"], texts[0])], [(first[1]["output"], texts[1])]]
    assert seen[3] == [[(first[2]["output"], texts[2]), (rounds[0][2]["output"], texts[2])]]
    assert texts[0].startswith(f"Energy was {clips[0].cues['energy_level']}.")
    # the chat really holds both answers and both follow-ups, in order
    prompt, _ = predictor.chat_inputs(clips[:1], [[(first[0]["output"], texts[0]),
                                                   (rounds[0][0]["output"], texts[0])]])
    decoded = predictor.tokenizer.decode(prompt[0])
    at = [decoded.index(first[0]["output"].strip()), decoded.index(texts[0])]
    at += [decoded.index(rounds[0][0]["output"].strip(), at[1]), decoded.rindex(texts[0])]
    assert at == sorted(at) and at[1] != at[3]

    served = load_predictor(trained, max_new_tokens=8, self_correct=(template, 2))
    final = served.predict_clips(clips, batch_size=2)
    assert [r["output"] for r in final] == [r["output"] for r in rounds[1]]
    assert [r["label"] for r in served.predict_clips(clips, rationale=False)] == \
        [r["label"] for r in predictor.predict_clips(clips, rationale=False)]  # no rationale:
    # nothing to re-check, the first answer
