"""The LLM judge of rationales: four 1-5 scores read from its JSON answer, anything else a
failure; requests go to an OpenAI-compatible endpoint (a stub on 127.0.0.1 here)."""
import json

import pandas as pd
import pytest

from components.config import EvaluateConfig, JudgeConfig
from components.distill.records import ClipCues
from components.evaluate.judge import CRITERIA, judge_metrics, parse_scores
from components.evaluate.stage import judged_rationales


def test_scores_are_read_from_the_first_complete_object():
    good = {"factual_alignment": 4, "interpretive_quality": 3, "completeness": 5, "fluency": 2}
    assert parse_scores(f"Sure! {json.dumps(good)} Hope it helps.") == \
        {k: float(v) for k, v in good.items()}
    assert parse_scores('{"factual_alignment": 4}') is None  # incomplete
    assert parse_scores(json.dumps({**good, "fluency": 7})) is None  # out of range
    assert parse_scores("no json at all") is None and parse_scores(None) is None
    later = '{"note": "x"} ' + json.dumps(good)
    assert parse_scores(later)["completeness"] == 5.0


def test_metrics_average_the_judged_clips_and_count_failures():
    scores = [dict.fromkeys(CRITERIA, 5.0), dict.fromkeys(CRITERIA, 3.0), None, None]
    values, cis = judge_metrics(scores, n_boot=200, seed=0)
    assert values["judge_failed"] == 0.5
    assert values["judge_score"] == pytest.approx(0.8)  # mean of 5 and 3, over 5
    assert values["judge_fluency"] == 4.0
    lo, hi = cis["judge_score"]
    assert 0.6 <= lo <= 0.8 <= hi <= 1.0


def test_a_systems_rationales_are_judged_through_the_endpoint(stub):
    def answer(user: str) -> str:
        if "mumble" in user:
            return "I cannot grade this."
        loud = "energy level: high" in user and "loud" in user
        score = 5 if loud else 2
        return json.dumps(dict.fromkeys(CRITERIA, score))

    stub.responder = answer
    cfg = EvaluateConfig(n_boot=100, judge=JudgeConfig(enabled=True, base_url=stub.base_url,
                                                       model="judge", max_retries=0))
    cues = {"a": ClipCues("a", "get out", "angry", ("angry", "sad"),
                          levels={"energy_level": "high"}),
            "b": ClipCues("b", "oh well", "sad", ("angry", "sad"),
                          levels={"energy_level": "low"})}
    ordered = pd.DataFrame({"utt_id": ["a", "b", "c", "d"],
                            "label": ["angry", "angry", "sad", "sad"],
                            "rationale": ["The voice is loud and sharp.", "It sounds loud.",
                                          "mumble", None]})
    values, cis = judged_rationales(ordered, cues, ["angry", "sad"], cfg, seed=0)
    assert stub.calls == 3  # the clip without a rationale is not sent
    assert values["judge_failed"] == pytest.approx(1 / 3)
    assert values["judge_score"] == pytest.approx((1.0 + 0.4) / 2)
    assert "judge_score" in cis
    sent = [b["messages"][-1]["content"] for b in stub.bodies]
    assert any("Predicted emotion: angry" in s and "Transcript: get out" in s for s in sent)
