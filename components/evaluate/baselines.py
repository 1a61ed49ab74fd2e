"""The reference systems every model is judged against: the majority class and eGeMAPS +
logistic regression (standardised globally, or z-normalised per speaker as the features stage
does), fitted on train with C chosen on dev, never on the test split."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd

from components.classical import fit_balanced_lr

EGEMAPS_COLUMNS = {"egemaps_lr_global": "egemaps", "egemaps_lr_speaker": "egemaps_spknorm"}
"""Baseline name -> features.parquet column it is fitted on."""


def predictions(utt_ids: list[str], labels: list[str], probs: np.ndarray | None = None,
                predicted: list[str | None] | None = None) -> pd.DataFrame:
    """A system's predictions in the evaluation's shape: utt_id, label, probabilities."""
    if predicted is None:
        predicted = [labels[int(i)] for i in np.asarray(probs).argmax(1)]
    rows = {"utt_id": list(utt_ids), "label": list(predicted)}
    rows["probabilities"] = [None] * len(rows["utt_id"]) if probs is None else [
        {name: float(p) for name, p in zip(labels, row)} for row in probs]
    return pd.DataFrame(rows)


def majority(train_labels: list[str], utt_ids: list[str], labels: list[str]) -> tuple[
        pd.DataFrame, dict]:
    """Every clip gets the train split's most common consensus label (probability 1)."""
    label = Counter(train_labels).most_common(1)[0][0]
    probs = np.array([[1.0 if name == label else 0.0 for name in labels]] * len(utt_ids))
    return predictions(utt_ids, labels, probs), {"label": label}


def _matrix(rows: pd.DataFrame, column: str) -> np.ndarray:
    x = np.array(rows[column].tolist(), dtype=np.float64)
    x[~np.isfinite(x)] = np.nan
    return x


def egemaps_lr(rows: pd.DataFrame, column: str, labels: list[str], c_grid: list[float],
               seed: int, test_split: str = "test") -> tuple[pd.DataFrame, dict]:
    """Class-balanced logistic regression on the `column` eGeMAPS vectors.

    `rows`: manifest + features of every clip (utt_id, split, label, column). Fitted on the
    train clips with a consensus label; C is the grid value with the best dev UA (ties: the
    smaller C); returns the `test_split` clips' predictions and {C, dev_ua per C}.
    """
    labelled = rows[rows["label"].isin(labels)]
    train, dev = labelled[labelled["split"] == "train"], labelled[labelled["split"] == "dev"]
    test = rows[rows["split"] == test_split] if test_split != "all" else rows
    if train.empty or dev.empty:
        raise ValueError("the eGeMAPS baselines need labelled train and dev clips")

    model, best, scores = fit_balanced_lr(_matrix(train, column), train["label"].tolist(),
                                          _matrix(dev, column), dev["label"].tolist(), c_grid,
                                          seed)
    probs = np.zeros((len(test), len(labels)))
    seen = model.predict_proba(_matrix(test, column))
    for j, name in enumerate(model.classes_):  # labels absent from train keep probability 0
        probs[:, labels.index(name)] = seen[:, j]
    return predictions(test["utt_id"].tolist(), labels, probs), {
        "C": best, "dev_ua": {str(c): round(v, 4) for c, v in scores.items()}}
