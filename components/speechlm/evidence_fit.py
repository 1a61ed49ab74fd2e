"""Fitting the evidence tokens' classifiers before SFT (`components.speechlm.evidence`).

The heads over the clip embedding are the encoder warm-up's (`pretrain_encoder`); here each
token gets its words' embeddings and, with a prosody token, its logistic regression on the
eGeMAPS vector, fitted on the train clips with C chosen on dev (never on test).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from components.classical import fit_balanced_lr
from components.speechlm.evidence import (
    set_constant_classifier,
    set_label_embeddings,
    set_prosody_classifier,
)
from components.speechlm.formats import PERCEPTION_TASKS
from components.speechlm.prosody_vector import population_vectors, training_vectors
from components.speechlm.sft_data import PERCEPTION_COLUMNS, labelled_clips


def prepare_evidence(model, tokenizer, features: pd.DataFrame, train: list[dict],
                     dev: list[dict], label_set: list[str], c_grid: list[float],
                     seed: int) -> dict:
    """Fill the evidence token's label embeddings and, with a prosody token, its logistic
    regression on the speaker-normalised eGeMAPS of the train clips (C chosen on dev UA).
    Returns {evidence_lr_C, ...}."""
    evidence = model.model.evidence
    if evidence is None:
        return {}
    set_label_embeddings(evidence, model.get_input_embeddings(), tokenizer, label_set)
    if evidence.prosody_classifier is None:
        return {}
    splits = {}
    for name, examples in (("train", train), ("dev", dev)):
        clips = labelled_clips(examples)
        vectors = training_vectors(features, {u for u, _ in clips})
        splits[name] = (np.stack([vectors[u] for u, _ in clips]), [y for _, y in clips])
    pipeline, c, scores = fit_balanced_lr(*splits["train"], *splits["dev"], c_grid, seed)
    set_prosody_classifier(evidence, pipeline, label_set)
    return {"evidence_lr_C": c, "evidence_lr_dev_ua": round(scores[c], 4)}


def _level_split(features: pd.DataFrame, examples: list[dict], task: str, stats: dict,
                 ) -> tuple[np.ndarray, list[str]]:
    """The SER clips' eGeMAPS vectors with a measured `task` level, in both normalisations the
    prosody token is given (speaker, population), and the level of each row."""
    answers = PERCEPTION_TASKS[task][1]
    level = dict(zip(features["utt_id"], features[PERCEPTION_COLUMNS[task]].astype(str)))
    clips = [u for u, _ in labelled_clips(examples) if level.get(u) in answers]
    if not clips:
        raise ValueError(f"no clip of the split has a measured {task} level for its evidence token")
    speaker = training_vectors(features, set(clips))
    population = population_vectors(features, set(clips), stats)
    x = np.stack([speaker[u] for u in clips] + [population[u] for u in clips])
    return x, [level[u] for u in clips] * 2


def prepare_level_evidence(model, tokenizer, features: pd.DataFrame, train: list[dict],
                           dev: list[dict], stats: dict | None, c_grid: list[float],
                           seed: int) -> dict:
    """Fill each level evidence token's level-word embeddings and, with a prosody token, its
    logistic regression from the eGeMAPS vector to the task's measured level: unweighted with
    C chosen on dev accuracy (the perception answers are scored by accuracy), fitted on both
    normalisations of the train clips' vectors, so that one regression reads the
    speaker-normalised vector of training and the population-normalised one of a served clip.
    `stats`: the population statistics. Returns {level_lr_<task>_C, ...}."""
    tokens = model.model.level_evidence
    if tokens is None:
        return {}
    logged = {}
    for task, token in tokens.items():
        answers = list(PERCEPTION_TASKS[task][1])
        set_label_embeddings(token, model.get_input_embeddings(), tokenizer, answers)
        if token.prosody_classifier is None:
            continue
        x_train, y_train = _level_split(features, train, task, stats)
        if len(set(y_train)) < 2:
            set_constant_classifier(token, answers, y_train[0])
            continue
        pipeline, c, scores = fit_balanced_lr(x_train, y_train, *_level_split(features, dev, task, stats),
                                              c_grid, seed, balanced=False)
        set_prosody_classifier(token, pipeline, answers)
        logged.update({f"level_lr_{task}_C": c, f"level_lr_{task}_dev_accuracy": round(scores[c], 4)})
    return logged
