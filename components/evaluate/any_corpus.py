"""`emoreason evaluate --model M --corpus C --data-dir D --out OUT`: one saved model on a
corpus it was not trained on, with no code change between corpora.

The corpus goes through the same loader, manifest gate and feature extraction as in the
pipeline, into OUT, with the model's saved level cut points (a new corpus is described
against the training corpus's levels: the model learned those words). Clips whose consensus
label is outside the model's label set are counted as `out_of_set` and left out; the metrics
are computed on the labels the model and the corpus share. With `label_set="shared"` (the
default) the model may only answer one of those labels, as a classifier trained on the shared
classes would (the cross-corpus protocol); its open-set labels, any label of the model
(e.g. "surprised" on a corpus without it), are scored beside it as `model_open_set` (label
only). Everything is logged under one MLflow parent run of its own
(`emoreason.orchestrator=evaluate`).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from components.config import Params


def resolve_model_folder(model: str, out: Path) -> Path:
    """A model folder, or the folder inside a registered pyfunc (`models:/name@alias` or
    `models:/name/version`), downloaded into OUT."""
    if not model.startswith("models:/"):
        folder = Path(model)
        if not (folder / "task.json").exists():
            raise FileNotFoundError(f"{folder} is not a trained model folder (no task.json)")
        return folder
    import mlflow

    target = out / "model"
    uri = f"{model.rstrip('/')}/artifacts/model"
    path = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(target)))
    if not (path / "task.json").exists():
        raise FileNotFoundError(f"{model} holds no emoreason model folder (no task.json)")
    return path


def levels_for_corpus(levels: dict, corpus: str, genders: list[str]) -> dict:
    """The model's cut points, also under `corpus` (and any gender the model has none for,
    which gets the first trained gender's pitch cut points)."""
    trained = sorted(levels["pause"])[0]
    out = json.loads(json.dumps(levels))
    for key in ("energy", "pause", "pitch_range", "rate", "pitch"):
        out[key].setdefault(corpus, json.loads(json.dumps(levels[key][trained])))
    pitch = out["pitch"][corpus]
    first = sorted(pitch)[0]
    for gender in genders:
        pitch.setdefault(gender, pitch[first])
    return out


LABEL_SETS = ("shared", "model")


def evaluate_model_on_corpus(params: Params, model: str, corpus: str, data_dir: Path | None,
                             split: str, out: Path, label_set: str = "shared") -> dict:
    """Prepare, gate and measure the corpus into `out`, then score the model, answering one of
    the shared labels (`label_set="shared"`) or any of its own (`"model"`); returns
    metrics.json's content."""
    from components.evaluate.metrics import votes_per_clip
    from components.evaluate.rationale_quality import load_clip_cues
    from components.evaluate.stage import (
        GOLD_COLUMNS,
        evaluation_rows,
        log_to_mlflow,
        print_self_correction,
        print_table,
        score_self_correction,
        score_systems,
        write_outputs,
    )
    from components.evaluate.refinement import frame_of
    from components.evaluate.systems import predictor_clips
    from components.features.levels import load_levels, save_levels
    from components.features.stage import run_features
    from components.gates.gx_report import raise_if_failed
    from components.gates.manifest_gate import run_manifest_gate
    from components.prepare.schema import read_manifest
    from components.prepare.stage import run_prepare
    from components.tracking import (
        PARENT_ENV,
        finish_pipeline_run,
        pipeline_key,
        start_pipeline_run,
    )

    if label_set not in LABEL_SETS:
        raise ValueError(f"label set must be one of {LABEL_SETS}, got {label_set!r}")
    out.mkdir(parents=True, exist_ok=True)
    folder = resolve_model_folder(model, out)
    labels = json.loads((folder / "task.json").read_text())["labels"]
    parent = start_pipeline_run(params.tracking, pipeline_key(), f"evaluate-{corpus}",
                                orchestrator="evaluate")
    saved_parent = os.environ.get(PARENT_ENV)
    os.environ[PARENT_ENV] = parent
    success = False
    try:
        meta = run_prepare(params, corpus, data_dir, out / "prepared")
        gate = params.manifest_gate
        gate.out, gate.report_dir = str(out / "gated"), str(out / "manifest_gate")
        raise_if_failed(run_manifest_gate(out / "prepared" / "manifest.parquet", gate))
        manifest = out / "gated" / "manifest.parquet"
        df, _ = read_manifest(manifest)
        levels = levels_for_corpus(load_levels(folder / "levels.json"), meta.corpus,
                                   sorted(set(df["gender"])))
        save_levels(out / "model_levels.json", levels)
        run_features(params, manifest, out / "features", out / "model_levels.json")
        features = out / "features" / "features.parquet"
        _, evaluated, meta = evaluation_rows(features, manifest, split,
                                             params.evaluate.max_clips)
        shared = [label for label in labels if label in set(meta.labels)]
        if not shared:
            raise ValueError(f"the model's labels {labels} and the {meta.corpus} corpus's "
                             f"{list(meta.labels)} have none in common")
        allowed = shared if label_set == "shared" and len(shared) < len(labels) else None
        cfg, frames = params.evaluate, out / "features" / "frames"
        predictor, clips = predictor_clips(folder, evaluated, frames, meta.data_root,
                                           cfg.max_new_tokens, params.base.device,
                                           params.inference, allowed)
        ids = evaluated["utt_id"].tolist()
        systems = {"model": frame_of(predictor.predict_clips(
            clips, rationale=cfg.rationale, batch_size=cfg.batch_size, progress=True), ids)}
        if allowed:  # the same loaded model and inputs, any label, label only
            predictor.allow(None)
            systems["model_open_set"] = frame_of(predictor.predict_clips(
                clips, rationale=False, batch_size=cfg.batch_size, progress=True), ids)
        gold = evaluated[GOLD_COLUMNS]
        cues = load_clip_cues(features, manifest, sorted(set(evaluated["split"])))
        cfg.reference = ""
        scored = score_systems(gold, systems, labels, cues, cfg, params.base.seed)
        refined = score_self_correction(params, evaluated, {"model": systems["model"]}, gold,
                                        labels, cues, meta.data_root, frames,
                                        {"model": folder}, allowed)
        answers = "the shared labels" if allowed else "any of the model's labels"
        report_meta = {"corpus": meta.corpus, "split": split, "labels": labels,
                       "corpus_labels": list(meta.labels), "shared_labels": shared,
                       "label_set": label_set, "answers": allowed or labels,
                       "model": model, "n_clips": len(gold),
                       "n_speakers": int(gold["speaker"].nunique()),
                       "votes_per_clip": votes_per_clip(gold),
                       "n_boot": cfg.n_boot,
                       "note": "metrics over clips whose consensus label is in the model's "
                               f"label set (out_of_set: the others); `model` answers {answers}"
                               + ("; `model_open_set` any of the model's labels (label only)"
                                  if allowed else "")}
        write_outputs(scored, gold, systems, labels, report_meta, out, refined,
                      params.inference.self_correct_rounds)
        log_to_mlflow(params, scored, out, report_meta, refined)
        success = True
    finally:
        if saved_parent is None:
            os.environ.pop(PARENT_ENV, None)
        else:
            os.environ[PARENT_ENV] = saved_parent
        finish_pipeline_run(params.tracking, parent, success)
    print_table(scored["systems"])
    for name, entry in refined.items():
        print_self_correction(name, entry["rows"])
    print(f"evaluate: {out / 'metrics.json'}, report {out / 'report.html'}")
    return json.loads((out / "metrics.json").read_text())
