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


def _split_vectors(features: pd.DataFrame, examples: list[dict], stats: dict,
                   ) -> tuple[list[str], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(the SER clips, their speaker- and their population-normalised eGeMAPS vectors): the
    two forms the prosody token is given."""
    clips = [u for u, _ in labelled_clips(examples)]
    return (clips, training_vectors(features, set(clips)),
            population_vectors(features, set(clips), stats))


def _level_rows(split: tuple, level: dict[str, str], answers: tuple[str, ...], task: str,
                ) -> tuple[np.ndarray, list[str]]:
    """The split's clips with a measured `task` level, each in both forms, and their levels."""
    clips, speaker, population = split
    kept = [u for u in clips if level.get(u) in answers]
    if not kept:
        raise ValueError(f"no clip of the split has a measured {task} level for its evidence token")
    return (np.stack([speaker[u] for u in kept] + [population[u] for u in kept]),
            [level[u] for u in kept] * 2)


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
    # Without a prosody token the tokens have no regression: the head alone reads the clip.
    splits = [_split_vectors(features, examples, stats) for examples in (train, dev)] \
        if model.config.prosody_dim else None
    logged = {}
    for task, token in tokens.items():
        answers = PERCEPTION_TASKS[task][1]
        set_label_embeddings(token, model.get_input_embeddings(), tokenizer, list(answers))
        if splits is None:
            continue
        level = dict(zip(features["utt_id"], features[PERCEPTION_COLUMNS[task]].astype(str)))
        x_train, y_train = _level_rows(splits[0], level, answers, task)
        if len(set(y_train)) < 2:
            set_constant_classifier(token, list(answers), y_train[0])
            continue
        pipeline, c, scores = fit_balanced_lr(x_train, y_train,
                                              *_level_rows(splits[1], level, answers, task),
                                              c_grid, seed, balanced=False)
        set_prosody_classifier(token, pipeline, list(answers))
        logged.update({f"level_lr_{task}_C": c, f"level_lr_{task}_dev_accuracy": round(scores[c], 4)})
    return logged
