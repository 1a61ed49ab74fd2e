"""Majority-label, annotator-aware and distributional metrics of one system on the test clips.

Emotion labels are subjective: a clip where the annotators split is not a clip with one right
answer. Besides the usual scores against the consensus label (WA, UA, macro-F1) this reports
the annotator-aware scores of arXiv 2509.24187 (a prediction some annotator chose is not
wrong) and, when a system gives label probabilities, how far they are from the annotators'
vote distribution and how well calibrated they are.

Every metric is a weighted mean or ratio of per-clip quantities (`ClipTable`), so a bootstrap
resample is a vector of clip weights and all resamples are scored at once (`weighted_metrics`)
instead of one sklearn call per resample and metric.
"""
from __future__ import annotations

import json
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, fields, replace

import numpy as np
import pandas as pd
from scipy.spatial.distance import jensenshannon
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    f1_score,
    precision_recall_fscore_support,
)

NONE = "<none>"
"""Stands for a missing or malformed prediction: never a gold label, so it is always wrong."""

METRIC_KEYS = ("n", "n_consensus", "wa", "ua", "macro_f1", "any_annotator_accuracy",
               "annotator_aware_macro_f1", "annotator_agreement", "tied_hit_rate", "jsd", "ece",
               "brier", "well_formed")
COUNT_KEYS = ("n", "n_consensus")
"""Counts, not estimates: no confidence interval."""
SLICE_KEYS = ("n", "wa", "ua", "macro_f1", "any_annotator_accuracy")
AGREEMENT_LEVELS = ("unanimous", "majority", "no_agreement")


# ---------------------------------------------------------------- per-clip table

@dataclass(frozen=True)
class ClipTable:
    """The per-clip quantities every metric is built from, in the gold frame's clip order."""

    utt_id: np.ndarray
    classes: tuple[str, ...]
    """`labels`, then gold labels outside them (sorted), then NONE; indices below refer here."""
    n_labels: int
    truth: np.ndarray
    """Consensus label index, -1 where the annotators did not agree."""
    pred: np.ndarray
    """Predicted label index (NONE's for no prediction or one outside `labels`)."""
    votes: np.ndarray
    """(clips, classes) number of ratings of each class."""
    target: np.ndarray
    """Annotator-aware target: the prediction when an annotator chose it, else the consensus,
    else the most chosen label (ties by class order); -1 for a clip without ratings."""
    tied: np.ndarray
    """(clips, classes) whether the class is one of the most chosen."""
    probs: np.ndarray | None
    """(clips, labels) predicted distribution, rows sum to 1; None unless every clip has one."""
    well_formed: np.ndarray | None
    agreement: np.ndarray
    speaker: np.ndarray
    gender: np.ndarray

    def take(self, idx) -> ClipTable:
        """The table of the clips at `idx` (a mask or indices)."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = value[idx] if isinstance(value, np.ndarray) else value
        return replace(self, **out)

    @property
    def consensus(self) -> np.ndarray:
        return self.truth >= 0

    @property
    def hit_any(self) -> np.ndarray:
        """Some annotator chose the prediction."""
        return self.votes[np.arange(len(self.pred)), self.pred] > 0


def _pred_label(value, labels: set[str]) -> str:
    return value if isinstance(value, str) and value in labels else NONE


def _votes(value) -> list[str]:
    if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)):
        return []
    if isinstance(value, str):  # a JSON list that was not parsed
        value = json.loads(value)
    return [str(v) for v in value]


def votes_per_clip(gold: pd.DataFrame) -> float | None:
    """Mean number of annotator votes on the clips that have any. At 1 (an acted label, one
    rater) the vote distribution is one-hot, and `jsd` then measures distance from that
    label: bounded by 1, it charges a confident wrong answer hardly more than an unsure one,
    so it favours overconfident models where ECE and Brier do not. None without votes."""
    counts = [len(_votes(v)) for v in gold["annotator_labels"]]
    counts = [c for c in counts if c]
    return float(np.mean(counts)) if counts else None


def _distribution(value, labels: list[str]) -> np.ndarray | None:
    if not isinstance(value, dict):
        return None
    p = np.array([float(value.get(lab) or 0.0) for lab in labels])
    total = p.sum()
    if not np.isfinite(total) or total <= 0 or (p < 0).any():
        return None
    return p / total


def clip_table(gold: pd.DataFrame, pred: pd.DataFrame, labels: list[str]) -> ClipTable:
    """Align `pred` to `gold` on utt_id and compute the per-clip quantities.

    The two frames must hold the same clips: a clip silently missing from one side would
    change every score."""
    labels = list(labels)
    if gold["utt_id"].duplicated().any() or pred["utt_id"].duplicated().any():
        raise ValueError("utt_id is not unique in gold or pred")
    if set(gold["utt_id"]) != set(pred["utt_id"]):
        missing = sorted(set(gold["utt_id"]) ^ set(pred["utt_id"]))
        raise ValueError(f"gold and pred hold different clips, e.g. {missing[:3]}")
    p = pred.set_index("utt_id").loc[gold["utt_id"]]
    label_set = set(labels)

    consensus = [v if isinstance(v, str) else "" for v in gold["label"]]
    ratings = [_votes(v) for v in gold["annotator_labels"]]
    seen = {lab for lab in consensus if lab} | {lab for r in ratings for lab in r}
    extra = sorted(seen - label_set - {NONE})
    classes = tuple(labels + extra + [NONE])
    index = {c: i for i, c in enumerate(classes)}
    n = len(gold)

    truth = np.array([index[c] if c else -1 for c in consensus], dtype=int)
    predicted = np.array([index[_pred_label(v, label_set)] for v in p["label"]], dtype=int)
    votes = np.zeros((n, len(classes)), dtype=float)
    for i, r in enumerate(ratings):
        for lab, count in Counter(r).items():
            votes[i, index[lab]] = count
    top = votes.max(axis=1, keepdims=True)
    tied = (votes == top) & (top > 0)
    rows = np.arange(n)
    chosen = votes[rows, predicted] > 0
    most = np.where(tied.any(axis=1), tied.argmax(axis=1), -1)  # first of the tied, class order
    target = np.where(chosen, predicted, np.where(truth >= 0, truth, most))

    probs = None
    if "probabilities" in p.columns:
        dists = [_distribution(v, labels) for v in p["probabilities"]]
        if n and all(d is not None for d in dists):
            probs = np.vstack(dists)
    well_formed = None
    if "well_formed" in p.columns:
        well_formed = np.array([bool(v) if isinstance(v, (bool, np.bool_)) else False
                                for v in p["well_formed"]], dtype=float)

    def column(name, default):
        return (gold[name].to_numpy() if name in gold.columns
                else np.full(n, default, dtype=object))

    return ClipTable(
        utt_id=gold["utt_id"].to_numpy(), classes=classes, n_labels=len(labels),
        truth=truth, pred=predicted, votes=votes, target=target, tied=tied, probs=probs,
        well_formed=well_formed,
        agreement=pd.to_numeric(pd.Series(column("agreement", np.nan)),
                                errors="coerce").to_numpy(float),
        speaker=column("speaker", "unknown"), gender=column("gender", "unknown"),
    )


# ---------------------------------------------------------------- per-clip pieces

def _calibration(t: ClipTable, bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(top-1 probability, whether its class is the consensus, bin index); bins are
    right-closed, (0, 0.1], ..., (0.9, 1]."""
    conf = t.probs.max(axis=1)
    correct = (t.probs.argmax(axis=1) == t.truth).astype(float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.digitize(conf, edges[1:-1], right=True)
    return conf, correct, which


def _jsd(t: ClipTable) -> np.ndarray:
    """Per-clip Jensen-Shannon divergence (base 2) from the annotators' votes over `labels`;
    NaN for a clip none of whose votes is in `labels`."""
    q = t.votes[:, :t.n_labels]
    total = q.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        q = q / total
    # scipy returns the distance, the square root of the divergence
    return jensenshannon(t.probs, q, base=2, axis=1) ** 2


def _brier(t: ClipTable) -> np.ndarray:
    onehot = np.zeros_like(t.probs)
    rows = np.flatnonzero(t.truth >= 0)
    inside = t.truth[rows] < t.n_labels
    onehot[rows[inside], t.truth[rows[inside]]] = 1.0
    return ((t.probs - onehot) ** 2).sum(axis=1)


# ---------------------------------------------------------------- weighted (bootstrap) scores

def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _macro_f1_weighted(w: np.ndarray, truth: np.ndarray, pred: np.ndarray, scored: np.ndarray,
                       n_classes: int) -> np.ndarray:
    """Macro-F1 over the classes present in the (weighted) truth; F1 = 2TP / (predicted +
    support), the same as sklearn's 2TP / (2TP + FP + FN)."""
    classes = np.arange(n_classes)
    is_true = (truth[:, None] == classes) & scored[:, None]
    is_pred = (pred[:, None] == classes) & scored[:, None]
    support = w @ is_true
    tp = w @ (is_true & is_pred)
    predicted = w @ is_pred
    present = support > 0
    f1 = np.where(present, _ratio(2 * tp, predicted + support), 0.0)
    return _ratio(f1.sum(axis=1), present.sum(axis=1).astype(float))


def _recall_weighted(w: np.ndarray, truth: np.ndarray, pred: np.ndarray, scored: np.ndarray,
                     n_classes: int) -> np.ndarray:
    """Unweighted average recall over the classes present in the (weighted) truth."""
    classes = np.arange(n_classes)
    is_true = (truth[:, None] == classes) & scored[:, None]
    support = w @ is_true
    tp = w @ (is_true & (pred == truth)[:, None])
    present = support > 0
    recall = np.where(present, _ratio(tp, support), 0.0)
    return _ratio(recall.sum(axis=1), present.sum(axis=1).astype(float))


def weighted_metrics(t: ClipTable, w: np.ndarray, bins: int = 10) -> dict[str, np.ndarray]:
    """Every metric of `point_metrics` for each row of clip weights `w` (resamples, clips).

    Written by hand because sklearn scores one sample per call: 1000 resamples x 5 metrics
    through sklearn take seconds, as weighted counts they take milliseconds. A resample with
    replacement is the same as weighting each clip by how often it was drawn."""
    w = np.atleast_2d(np.asarray(w, dtype=float))
    k = len(t.classes)
    cons = t.consensus
    total = w.sum(axis=1)
    n_cons = w @ cons
    out = {
        "n": total,
        "n_consensus": n_cons,
        "wa": _ratio(w @ (cons & (t.pred == t.truth)), n_cons),
        "ua": _recall_weighted(w, t.truth, t.pred, cons, k),
        "macro_f1": _macro_f1_weighted(w, t.truth, t.pred, cons, k),
        "any_annotator_accuracy": _ratio(w @ t.hit_any, total),
        "annotator_aware_macro_f1": _macro_f1_weighted(w, t.target, t.pred, t.target >= 0, k),
    }
    n_ratings = t.votes.sum(axis=1)
    rated = n_ratings > 0
    share = _ratio(t.votes[np.arange(len(t.pred)), t.pred], n_ratings)
    out["annotator_agreement"] = _ratio(w @ np.where(rated, share, 0.0), w @ rated)
    no_cons = ~cons & rated
    hit_tie = t.tied[np.arange(len(t.pred)), t.pred] & no_cons
    out["tied_hit_rate"] = _ratio(w @ hit_tie, w @ no_cons)

    nan = np.full(len(w), np.nan)
    if t.probs is None:
        out.update(jsd=nan, ece=nan, brier=nan)
    else:
        jsd = _jsd(t)
        ok = np.isfinite(jsd)
        out["jsd"] = _ratio(w @ np.where(ok, jsd, 0.0), w @ ok)
        conf, correct, which = _calibration(t, bins)
        gap = np.zeros(len(w))
        for b in range(bins):
            inside = cons & (which == b)
            gap += np.abs(w @ (inside * correct) - w @ (inside * conf))
        out["ece"] = _ratio(gap, n_cons)
        out["brier"] = _ratio(w @ np.where(cons, _brier(t), 0.0), n_cons)
    out["well_formed"] = nan if t.well_formed is None else _ratio(w @ t.well_formed, total)
    return {key: out[key] for key in METRIC_KEYS}


# ---------------------------------------------------------------- point estimates

def _names(t: ClipTable, idx: np.ndarray) -> np.ndarray:
    return np.asarray(t.classes, dtype=object)[idx]


def _present(t: ClipTable, idx: np.ndarray) -> list[str]:
    """The classes among `idx`, in class order (for sklearn's `labels=`)."""
    return [t.classes[i] for i in sorted(set(idx.tolist()))]


def table_metrics(t: ClipTable) -> dict[str, float]:
    """`point_metrics` of an already aligned table (slices reuse it on subsets)."""
    out = {k: float(v[0]) for k, v in weighted_metrics(t, np.ones((1, len(t.pred)))).items()}
    cons = t.consensus
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # predictions of classes absent from the truth
        if cons.any():
            y_true, y_pred = _names(t, t.truth[cons]), _names(t, t.pred[cons])
            out["wa"] = float(accuracy_score(y_true, y_pred))
            out["ua"] = float(balanced_accuracy_score(y_true, y_pred))
            out["macro_f1"] = float(f1_score(y_true, y_pred, labels=_present(t, t.truth[cons]),
                                             average="macro", zero_division=0))
        has = t.target >= 0
        if has.any():
            out["annotator_aware_macro_f1"] = float(f1_score(
                _names(t, t.target[has]), _names(t, t.pred[has]),
                labels=_present(t, t.target[has]), average="macro", zero_division=0))
    return out


def point_metrics(gold: pd.DataFrame, pred: pd.DataFrame, labels: list[str]) -> dict[str, float]:
    """All metrics of one system (keys `METRIC_KEYS`); NaN where not computable."""
    return table_metrics(clip_table(gold, pred, labels))


# ---------------------------------------------------------------- bootstrap

def resample_indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n) clip indices drawn with replacement; the same seed gives the same draws, so
    systems scored with one seed are compared on the same resamples."""
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def resample_weights(n: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n) how often each clip was drawn in each resample of `resample_indices`."""
    idx = resample_indices(n, n_boot, seed)
    flat = (idx + n * np.arange(n_boot)[:, None]).ravel()
    return np.bincount(flat, minlength=n * n_boot).reshape(n_boot, n).astype(float)


def percentile_ci(samples: np.ndarray, alpha: float) -> list[float]:
    """[lo, hi] percentile interval of the finite samples (NaN, NaN when there are none)."""
    samples = np.asarray(samples, dtype=float)
    samples = samples[np.isfinite(samples)]
    if not len(samples):
        return [float("nan"), float("nan")]
    lo, hi = np.percentile(samples, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return [float(lo), float(hi)]


def bootstrap_ci(gold: pd.DataFrame, pred: pd.DataFrame, labels: list[str], n_boot: int = 1000,
                 seed: int = 0, alpha: float = 0.05,
                 fn: Callable = point_metrics) -> dict[str, list[float]]:
    """Percentile bootstrap over clips: metric -> [lo, hi], for the metrics that are not NaN
    and not counts. `point_metrics` is scored on all resamples at once; any other `fn(gold,
    pred, labels) -> dict` is called once per resample (clips drawn twice get distinct
    utt_ids so that it can merge on them)."""
    if fn is point_metrics:
        t = clip_table(gold, pred, labels)
        point = table_metrics(t)
        samples = weighted_metrics(t, resample_weights(len(t.pred), n_boot, seed))
    else:
        point = fn(gold, pred, labels)
        g = gold.reset_index(drop=True)
        p = pred.set_index("utt_id").loc[g["utt_id"]].reset_index()
        draws = []
        for idx in resample_indices(len(g), n_boot, seed):
            ids = [f"{u}#{j}" for j, u in enumerate(g["utt_id"].to_numpy()[idx])]
            draws.append(fn(g.iloc[idx].assign(utt_id=ids), p.iloc[idx].assign(utt_id=ids),
                            labels))
        samples = {k: np.array([d.get(k, np.nan) for d in draws], dtype=float) for k in point}
    return {k: percentile_ci(samples[k], alpha) for k, v in point.items()
            if k not in COUNT_KEYS and v is not None and np.isfinite(v)}


def paired_bootstrap_pvalue(gold: pd.DataFrame, pred_a: pd.DataFrame, pred_b: pd.DataFrame,
                            labels: list[str], metric: str = "ua", n_boot: int = 1000,
                            seed: int = 0, alpha: float = 0.05) -> dict:
    """Is system a better than b on `metric`? Both are scored on the same resampled clips.

    The p-value is the shifted-null one (Berg-Kirkpatrick et al., 2012): the resampled
    differences centred on the observed one approximate the spread under no difference, so
    p = (1 + #{|d* - d| >= |d|}) / (1 + resamples), two-sided; the +1 keeps p above zero."""
    if metric not in METRIC_KEYS or metric in COUNT_KEYS:
        raise ValueError(f"unknown metric {metric!r}; one of {METRIC_KEYS[2:]}")
    ta, tb = clip_table(gold, pred_a, labels), clip_table(gold, pred_b, labels)
    ones = np.ones((1, len(ta.pred)))
    a = float(weighted_metrics(ta, ones)[metric][0])
    b = float(weighted_metrics(tb, ones)[metric][0])
    diff = a - b
    w = resample_weights(len(ta.pred), n_boot, seed)
    d = weighted_metrics(ta, w)[metric] - weighted_metrics(tb, w)[metric]
    d = d[np.isfinite(d)]
    if not np.isfinite(diff) or not len(d):
        p = float("nan")
    else:
        p = float((1 + np.sum(np.abs(d - diff) >= abs(diff) - 1e-12)) / (1 + len(d)))
    return {"metric": metric, "a": a, "b": b, "diff": diff, "p": p,
            "ci": percentile_ci(d, alpha), "n_boot": int(n_boot)}


# ---------------------------------------------------------------- tables

def per_class(gold: pd.DataFrame, pred: pd.DataFrame, labels: list[str]) -> pd.DataFrame:
    """Precision, recall and F1 of each label on the consensus clips."""
    t = clip_table(gold, pred, labels)
    cons = t.consensus
    precision, recall, f1, support = precision_recall_fscore_support(
        _names(t, t.truth[cons]), _names(t, t.pred[cons]), labels=list(labels),
        zero_division=0)
    return pd.DataFrame({"class": list(labels), "support": support.astype(int),
                         "precision": precision, "recall": recall, "f1": f1})


def agreement_level(t: ClipTable) -> np.ndarray:
    """unanimous (every rating is the consensus), majority (a consensus, not unanimous) or
    no_agreement (no consensus)."""
    unanimous = t.consensus & (t.agreement >= 1.0 - 1e-9)
    return np.where(~t.consensus, "no_agreement", np.where(unanimous, "unanimous", "majority"))


def slices(gold: pd.DataFrame, pred: pd.DataFrame, labels: list[str]) -> pd.DataFrame:
    """The main metrics per speaker, gender and agreement level: where a system fails."""
    t = clip_table(gold, pred, labels)
    groups = {"speaker": t.speaker.astype(str), "gender": t.gender.astype(str),
              "agreement": agreement_level(t)}
    rows = []
    for name, values in groups.items():
        order = ([v for v in AGREEMENT_LEVELS if v in set(values)] if name == "agreement"
                 else sorted(set(values)))
        for value in order:
            m = table_metrics(t.take(values == value))
            rows.append({"slice": name, "value": value, **{k: m[k] for k in SLICE_KEYS}})
    out = pd.DataFrame(rows, columns=["slice", "value", *SLICE_KEYS])
    return out.astype({"n": int})


def reliability(gold: pd.DataFrame, pred: pd.DataFrame, labels: list[str],
                bins: int = 10) -> pd.DataFrame:
    """Mean top-1 probability, accuracy and count per confidence bin (consensus clips), the
    data of a reliability diagram; counts are 0 when the system gives no probabilities."""
    t = clip_table(gold, pred, labels)
    edges = np.linspace(0.0, 1.0, bins + 1)
    out = pd.DataFrame({"bin_lower": edges[:-1], "bin_upper": edges[1:],
                        "confidence": np.nan, "accuracy": np.nan, "count": 0})
    if t.probs is None:
        return out
    conf, correct, which = _calibration(t, bins)
    cons = t.consensus
    for b in range(bins):
        inside = cons & (which == b)
        if inside.any():
            out.loc[b, ["confidence", "accuracy", "count"]] = [
                conf[inside].mean(), correct[inside].mean(), int(inside.sum())]
    return out.astype({"count": int})
