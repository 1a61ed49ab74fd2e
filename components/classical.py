"""The classical classifier the project measures against and builds on: class-balanced logistic
regression on standardised eGeMAPS vectors, with C chosen on dev UA (never on test). One fit for
the evaluation's `egemaps_lr_*` baselines and the SpeechLM's evidence token, so both are the
same model (the level evidence tokens fit it unweighted, on accuracy)."""
from __future__ import annotations

import numpy as np
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, balanced_accuracy_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler


def fit_balanced_lr(x_train: np.ndarray, y_train: list[str], x_dev: np.ndarray,
                    y_dev: list[str], c_grid: list[float], seed: int, balanced: bool = True,
                    ) -> tuple[Pipeline, float, dict[float, float]]:
    """(median imputer + scaler + class-balanced logistic regression fitted on train with the
    grid's C of the best dev UA (ties: the smaller C), that C, dev UA per C).
    `balanced=False`: no class weights and C chosen on dev accuracy, for targets scored by
    accuracy (the perception levels), where the frequent level should win its share."""
    if not len(x_train) or not len(x_dev):
        raise ValueError("the logistic regression needs train and dev clips")
    score = balanced_accuracy_score if balanced else accuracy_score

    def fit(c: float) -> Pipeline:
        model = make_pipeline(SimpleImputer(strategy="median"), StandardScaler(),
                              LogisticRegression(C=c, class_weight="balanced" if balanced else None,
                                                 max_iter=3000, random_state=seed))
        return model.fit(x_train, list(y_train))

    scores = {c: float(score(list(y_dev), fit(c).predict(x_dev))) for c in c_grid}
    best = max(c_grid, key=lambda c: (scores[c], -c))
    return fit(best), best, scores
