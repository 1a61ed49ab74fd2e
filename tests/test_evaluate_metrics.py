"""Evaluation metrics against values worked out by hand on a 7-clip example.

Labels (neutral N, happy H, angry A). Clips, consensus, ratings, prediction:
  c1  N   N N N     -> N
  c2  H   H H N     -> N      (a minority annotator chose N)
  c3  A   A A A     -> A
  c4  A   A A H     -> A
  c5  H   H H A     -> None   (no prediction)
  c6  ''  H H A A   -> N      (tie H/A, nobody chose N)
  c7  ''  N H A     -> A      (three-way tie, A among it)
"""
import json
import math
import time

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

from components.distill.records import ClipCues
from components.evaluate.metrics import (
    METRIC_KEYS,
    bootstrap_ci,
    clip_table,
    paired_bootstrap_pvalue,
    per_class,
    point_metrics,
    reliability,
    slices,
    votes_per_clip,
    weighted_metrics,
)
from components.evaluate.rationale_quality import (
    RATIONALE_KEYS,
    distinct_n,
    loops,
    rationale_bootstrap_ci,
    rationale_metrics,
    rationale_rows,
)

LABELS = ["neutral", "happy", "angry"]
N, H, A = LABELS
PROBS = {  # (N, H, A)
    "c1": (0.85, 0.10, 0.05), "c2": (0.55, 0.40, 0.05), "c3": (0.05, 0.10, 0.85),
    "c4": (0.10, 0.35, 0.55), "c5": (0.25, 0.45, 0.30), "c6": (0.50, 0.25, 0.25),
    "c7": (0.20, 0.20, 0.60),
}


def make_gold() -> pd.DataFrame:
    rows = [("c1", N, [N, N, N], "s1", "F"), ("c2", H, [H, H, N], "s1", "F"),
            ("c3", A, [A, A, A], "s1", "F"), ("c4", A, [A, A, H], "s2", "M"),
            ("c5", H, [H, H, A], "s2", "M"), ("c6", "", [H, H, A, A], "s2", "M"),
            ("c7", "", [N, H, A], "s2", "M")]
    out = []
    for utt, label, votes, speaker, gender in rows:
        counts = pd.Series(votes).value_counts()
        out.append({"utt_id": utt, "label": label, "annotator_labels": votes,
                    "label_distribution": json.dumps((counts / len(votes)).to_dict()),
                    "speaker": speaker, "gender": gender,
                    "agreement": counts.max() / len(votes), "n_annotators": len(votes)})
    return pd.DataFrame(out)


def make_pred(with_probs: bool = True) -> pd.DataFrame:
    preds = {"c1": N, "c2": N, "c3": A, "c4": A, "c5": None, "c6": N, "c7": A}
    rows = [{"utt_id": u, "label": preds[u],
             "probabilities": dict(zip(LABELS, PROBS[u])) if with_probs else None,
             "well_formed": u != "c5"} for u in reversed(list(preds))]  # other order on purpose
    return pd.DataFrame(rows)


def js_divergence(p, q) -> float:
    """Jensen-Shannon divergence in bits from its definition (independent of scipy)."""
    m = [(a + b) / 2 for a, b in zip(p, q)]
    def kl(x, y):
        return sum(a * math.log2(a / b) for a, b in zip(x, y) if a > 0)

    return (kl(p, m) + kl(q, m)) / 2


def test_point_metrics_match_hand_computation():
    m = point_metrics(make_gold(), make_pred(), LABELS)
    assert list(m) == list(METRIC_KEYS)
    assert m["n"] == 7 and m["n_consensus"] == 5
    # consensus clips: truth N H A A H, prediction N N A A none
    assert m["wa"] == pytest.approx(3 / 5)
    assert m["ua"] == pytest.approx((1 + 0 + 1) / 3)                  # recall N=1, H=0, A=1
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0 + 1) / 3)        # F1 N=2/3, H=0, A=1
    # c1 c2 c3 c4 c7 predicted a label some annotator chose
    assert m["any_annotator_accuracy"] == pytest.approx(5 / 7)
    # targets N N A A H H(tie H/A, label order) A; predictions N N A A none N A
    assert m["annotator_aware_macro_f1"] == pytest.approx((0.8 + 1 + 0) / 3)
    assert m["annotator_agreement"] == pytest.approx((1 + 1 / 3 + 1 + 2 / 3 + 0 + 0 + 1 / 3) / 7)
    assert m["tied_hit_rate"] == pytest.approx(1 / 2)                 # c6 miss, c7 hit
    votes = {"c1": (1, 0, 0), "c2": (1 / 3, 2 / 3, 0), "c3": (0, 0, 1), "c4": (0, 1 / 3, 2 / 3),
             "c5": (0, 2 / 3, 1 / 3), "c6": (0, 0.5, 0.5), "c7": (1 / 3, 1 / 3, 1 / 3)}
    assert m["jsd"] == pytest.approx(np.mean([js_divergence(PROBS[u], votes[u]) for u in votes]))
    # bins (0.8,0.9]: c1 .85 right, c3 .85 right; (0.5,0.6]: c2 .55 wrong, c4 .55 right;
    # (0.4,0.5]: c5 .45 right (top-1 of the probabilities is H although no label was given)
    assert m["ece"] == pytest.approx((abs(2 - 1.7) + abs(1 - 1.1) + abs(1 - 0.45)) / 5)
    assert m["brier"] == pytest.approx((0.035 + 0.665 + 0.035 + 0.335 + 0.455) / 5)
    assert m["well_formed"] == pytest.approx(6 / 7)


def test_missing_probabilities_and_flags_give_nan():
    pred = make_pred(with_probs=False).drop(columns="well_formed")
    m = point_metrics(make_gold(), pred, LABELS)
    assert all(math.isnan(m[k]) for k in ("jsd", "ece", "brier", "well_formed"))
    assert m["wa"] == pytest.approx(3 / 5)
    partly = make_pred()
    partly.loc[0, "probabilities"] = None
    assert math.isnan(point_metrics(make_gold(), partly, LABELS)["jsd"])


def test_no_consensus_clips_give_nan_tied_hit_rate():
    gold, pred = make_gold(), make_pred()
    keep = gold["label"] != ""
    m = point_metrics(gold[keep], pred[pred["utt_id"].isin(gold.loc[keep, "utt_id"])], LABELS)
    assert math.isnan(m["tied_hit_rate"])
    assert m["n"] == 5


def test_ratings_outside_the_label_set():
    """A rating outside the model's labels counts as a rating, but not in the vote
    distribution; a predicted label outside them counts as no prediction."""
    gold = pd.DataFrame({"utt_id": ["x", "y"], "label": [N, ""],
                         "annotator_labels": [[N, N, "other"], ["other", "other", H]]})
    pred = pd.DataFrame({"utt_id": ["x", "y"], "label": [N, "other"],
                         "probabilities": [{N: 1.0}, {H: 2.0, A: 2.0}]})
    m = point_metrics(gold, pred, LABELS)
    assert m["annotator_agreement"] == pytest.approx((2 / 3 + 0) / 2)
    assert m["any_annotator_accuracy"] == pytest.approx(1 / 2)
    assert m["tied_hit_rate"] == 0.0
    assert m["jsd"] == pytest.approx((0 + js_divergence((0, 0.5, 0.5), (0, 1, 0))) / 2)
    # targets: x -> N (chosen), y -> 'other' (most chosen; the prediction counts as none)
    assert m["annotator_aware_macro_f1"] == pytest.approx((1 + 0) / 2)


def test_pred_must_hold_the_same_clips():
    with pytest.raises(ValueError, match="different clips"):
        point_metrics(make_gold(), make_pred().iloc[1:], LABELS)


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_weighted_scores_equal_sklearn_with_sample_weights():
    rng = np.random.default_rng(1)
    n = 80
    gold = pd.DataFrame({
        "utt_id": [f"u{i}" for i in range(n)],
        "label": rng.choice(LABELS + [""], n),
        "annotator_labels": [list(rng.choice(LABELS, 3)) for _ in range(n)],
    })
    pred = pd.DataFrame({"utt_id": gold["utt_id"], "label": rng.choice(LABELS + [None], n)})
    t = clip_table(gold, pred, LABELS)
    w = rng.integers(0, 4, size=(5, n)).astype(float)
    got = weighted_metrics(t, w)
    names = np.array(t.classes, dtype=object)
    cons = t.consensus
    y, p = names[t.truth[cons]], names[t.pred[cons]]
    for b in range(len(w)):
        wc = w[b][cons]
        assert got["wa"][b] == pytest.approx(accuracy_score(y, p, sample_weight=wc))
        assert got["ua"][b] == pytest.approx(balanced_accuracy_score(y, p, sample_weight=wc))
        present = [c for c in LABELS if wc[y == c].sum() > 0]
        assert got["macro_f1"][b] == pytest.approx(
            f1_score(y, p, labels=present, average="macro", sample_weight=wc, zero_division=0))


def test_votes_per_clip_counts_the_raters_of_clips_that_have_any():
    assert votes_per_clip(make_gold()) == pytest.approx(22 / 7)
    acted = make_gold().assign(annotator_labels=[[N], [H], [A], [A], [H], [], None])
    assert votes_per_clip(acted) == 1.0
    assert votes_per_clip(acted.assign(annotator_labels=[[]] * 7)) is None  # JSON has no NaN


def test_per_class():
    df = per_class(make_gold(), make_pred(), LABELS)
    assert list(df["class"]) == LABELS
    assert list(df["support"]) == [1, 2, 2]
    assert list(df["precision"]) == pytest.approx([0.5, 0.0, 1.0])
    assert list(df["recall"]) == pytest.approx([1.0, 0.0, 1.0])
    assert list(df["f1"]) == pytest.approx([2 / 3, 0.0, 1.0])


def test_slices():
    df = slices(make_gold(), make_pred(), LABELS).set_index(["slice", "value"])
    assert list(df.loc["agreement"].index) == ["unanimous", "majority", "no_agreement"]
    assert df.loc[("agreement", "unanimous"), ["n", "wa", "ua", "macro_f1"]].tolist() == \
        pytest.approx([2, 1, 1, 1])
    majority = df.loc[("agreement", "majority")]
    assert [majority["n"], majority["wa"], majority["ua"], majority["macro_f1"],
            majority["any_annotator_accuracy"]] == pytest.approx([3, 1 / 3, 0.5, 0.5, 2 / 3])
    none = df.loc[("agreement", "no_agreement")]
    assert none["n"] == 2 and math.isnan(none["wa"]) and none["any_annotator_accuracy"] == 0.5
    s1 = df.loc[("speaker", "s1")]
    assert [s1["wa"], s1["ua"], s1["macro_f1"], s1["any_annotator_accuracy"]] == \
        pytest.approx([2 / 3, 2 / 3, 5 / 9, 1.0])
    male = df.loc[("gender", "M")]
    assert [male["n"], male["wa"], male["ua"], male["macro_f1"],
            male["any_annotator_accuracy"]] == pytest.approx([4, 0.5, 0.5, 0.5, 0.5])


def test_reliability_bins_and_ece_agree():
    df = reliability(make_gold(), make_pred(), LABELS)
    assert len(df) == 10 and df["count"].sum() == 5
    full = df[df["count"] > 0]
    assert full["bin_lower"].tolist() == pytest.approx([0.4, 0.5, 0.8])
    assert full["confidence"].tolist() == pytest.approx([0.45, 0.55, 0.85])
    assert full["accuracy"].tolist() == pytest.approx([1.0, 0.5, 1.0])
    assert full["count"].tolist() == [1, 2, 2]
    ece = (full["count"] * (full["accuracy"] - full["confidence"]).abs()).sum() / 5
    assert ece == pytest.approx(point_metrics(make_gold(), make_pred(), LABELS)["ece"])
    assert reliability(make_gold(), make_pred(False), LABELS)["count"].sum() == 0


def test_bootstrap_ci_contains_point_and_skips_nan():
    gold, pred = make_gold(), make_pred(with_probs=False)
    point = point_metrics(gold, pred, LABELS)
    cis = bootstrap_ci(gold, pred, LABELS, n_boot=300, seed=3)
    assert "jsd" not in cis and "n" not in cis and "n_consensus" not in cis
    for key, (lo, hi) in cis.items():
        assert lo <= point[key] <= hi, key
    assert cis == bootstrap_ci(gold, pred, LABELS, n_boot=300, seed=3)  # seeded


def test_bootstrap_ci_is_degenerate_for_a_perfect_predictor():
    gold = make_gold()
    pred = pd.DataFrame({"utt_id": gold["utt_id"],
                         "label": [lab or H for lab in gold["label"]]})
    cis = bootstrap_ci(gold, pred, LABELS, n_boot=200)
    for key in ("wa", "ua", "macro_f1"):
        assert cis[key] == [1.0, 1.0]


def test_bootstrap_with_a_custom_function_uses_the_same_draws():
    gold, pred = make_gold(), make_pred()

    def wa_only(g, p, labels):
        return {"wa": point_metrics(g, p, labels)["wa"]}

    fast = bootstrap_ci(gold, pred, LABELS, n_boot=50, seed=5)
    slow = bootstrap_ci(gold, pred, LABELS, n_boot=50, seed=5, fn=wa_only)
    assert slow["wa"] == pytest.approx(fast["wa"])


def synthetic(n: int, accuracy: float, seed: int, gold: pd.DataFrame | None = None):
    rng = np.random.default_rng(seed)
    if gold is None:
        truth = rng.choice(LABELS, n)
        gold = pd.DataFrame({"utt_id": [f"u{i}" for i in range(n)], "label": truth,
                             "annotator_labels": [[t, t, rng.choice(LABELS)] for t in truth],
                             "speaker": "s", "gender": "F", "agreement": 1.0})
    right = rng.random(n) < accuracy
    wrong = [LABELS[(LABELS.index(t) + 1) % 3] for t in gold["label"]]
    labels = np.where(right, gold["label"], wrong)
    probs = [dict(zip(LABELS, rng.dirichlet([1, 1, 1]))) for _ in range(n)]
    return gold, pd.DataFrame({"utt_id": gold["utt_id"], "label": labels,
                               "probabilities": probs})


def test_paired_pvalue_small_for_a_better_system_and_one_for_identical():
    gold, good = synthetic(200, 0.9, 0)
    _, bad = synthetic(200, 0.5, 1, gold)
    better = paired_bootstrap_pvalue(gold, good, bad, LABELS, metric="ua", n_boot=1000)
    assert better["diff"] > 0.2
    assert better["p"] < 0.01
    assert better["ci"][0] > 0
    same = paired_bootstrap_pvalue(gold, good, good, LABELS, metric="macro_f1", n_boot=500)
    assert same["diff"] == 0.0 and same["p"] == 1.0 and same["ci"] == [0.0, 0.0]


def test_bootstrap_is_fast_enough():
    gold, pred = synthetic(300, 0.7, 2)
    pred["well_formed"] = True
    start = time.perf_counter()
    cis = bootstrap_ci(gold, pred, LABELS, n_boot=1000)
    assert time.perf_counter() - start < 5.0
    assert {"wa", "ua", "jsd", "ece", "brier"} <= set(cis)


# ---------------------------------------------------------------- rationale quality

LEVELS = {"pitch_level": "high", "pitch_range_level": "wide", "energy_level": "high",
          "rate_level": "fast", "pause_level": "none", "intonation": "rising"}


def cues(utt: str, label: str = A) -> ClipCues:
    return ClipCues(utt_id=utt, transcript="", label=label, label_set=tuple(LABELS),
                    levels=dict(LEVELS))


RATIONALES = [
    "The energy is high and the pitch is low. This sounds angry.",  # 2 claims, 1 agrees
    "Angry. The voice is loud and the words come rapidly, so this is anger.",  # 2 agree; leaks
    "<think>unsure</think> A soft voice with a low pitch; the speaker sounds calm and neutral.",
    None,
    "   ",
]
PREDICTED = [A, A, H, N, A]


def test_rationale_metrics_match_hand_computation():
    clip_cues = [cues(f"r{i}") for i in range(5)]
    m = rationale_metrics(RATIONALES, PREDICTED, clip_cues)
    assert list(m) == list(RATIONALE_KEYS)
    assert m["with_rationale"] == pytest.approx(3 / 5)
    # claims: energy high + pitch low | energy high + rate fast | energy low + pitch low
    assert m["claims_per_rationale"] == pytest.approx(6 / 3)
    assert m["grounding"] == pytest.approx(3 / 6)
    # implied: angry, angry, neutral (predicted happy)
    assert m["implied_label_match"] == pytest.approx(2 / 3)
    assert m["leakage_rate"] == pytest.approx(1 / 3)  # 'Angry.' among the 4 lead words
    assert m["mean_words"] == pytest.approx((12 + 14 + 13) / 3)
    texts = [r for r in RATIONALES[:3]]
    texts[2] = texts[2].split("</think> ")[1]
    assert m["distinct_2"] == pytest.approx(distinct_n(texts))


def test_loop_rate_flags_a_three_word_run_said_three_times():
    looping = "the contour is flat and the contour is long; the contour is flat and falls"
    assert loops(looping) and not loops("the contour is flat and the contour is long")
    m = rationale_metrics([looping, RATIONALES[0], None], [A, A, A], [cues("a"), cues("b"), cues("c")])
    assert m["loop_rate"] == pytest.approx(1 / 2)


def test_distinct_2_counts_repeats_across_rationales():
    assert distinct_n(["the pitch is high", "The pitch is low"]) == pytest.approx(4 / 6)
    assert math.isnan(distinct_n(["one"]))


def test_clips_without_cues_are_left_out_of_grounding_only():
    rows = rationale_rows(RATIONALES[:2], PREDICTED[:2], [cues("r0"), None], labels=LABELS)
    assert rows["n_claims"].tolist() == [2, 2] and rows["n_checked"].tolist() == [2, 0]
    m = rationale_metrics(RATIONALES[:2], PREDICTED[:2], [cues("r0"), None], labels=LABELS)
    assert m["grounding"] == pytest.approx(1 / 2)
    assert m["implied_label_match"] == 1.0


def test_no_rationales_give_nan_except_the_share():
    m = rationale_metrics([None, ""], [A, A], [cues("a"), cues("b")])
    assert m["with_rationale"] == 0.0
    assert all(math.isnan(m[k]) for k in RATIONALE_KEYS if k != "with_rationale")


def test_rationale_bootstrap_ci():
    rows = rationale_rows(RATIONALES, PREDICTED, [cues(f"r{i}") for i in range(5)])
    point = rationale_metrics(RATIONALES, PREDICTED, [cues(f"r{i}") for i in range(5)])
    cis = rationale_bootstrap_ci(rows, n_boot=300)
    assert "distinct_2" not in cis
    for key, (lo, hi) in cis.items():
        assert lo <= point[key] <= hi, key
    same = pd.concat([rows.iloc[[1]]] * 4, ignore_index=True)
    assert rationale_bootstrap_ci(same, n_boot=100)["grounding"] == [1.0, 1.0]
