"""The `evaluate` stage: every system on the test split, side by side, annotator-aware.

Systems: `majority`, `egemaps_lr_global`, `egemaps_lr_speaker`, `encoder` (the SpeechLM's
warmed-up encoder and head) and every model folder of `evaluate.models` that exists
(`zeroshot`, `sft`, later `rl`). Outputs in `evaluate.out`: `metrics.json` (DVC metrics),
`predictions/<system>.parquet`, `plots/confusion_<system>.csv` (DVC plots), per-class and
per-slice CSVs, PNG pictures and a self-contained `report.html`; MLflow gets one run per
system under the pipeline's parent (same metric names, so the UI compares them) and the
report in the evaluate run.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pandas as pd

from components.config import EvaluateConfig, Params
from components.prepare.schema import read_manifest
from components.run_stats import write_run_stats
from components.speechlm.sft_data import spread

GOLD_COLUMNS = ["utt_id", "label", "annotator_labels", "label_distribution", "speaker",
                "gender", "agreement", "n_annotators"]
MLFLOW_KEYS = ("wa", "ua", "macro_f1", "any_annotator_accuracy", "annotator_aware_macro_f1",
               "annotator_agreement", "tied_hit_rate", "jsd", "ece", "brier", "well_formed",
               "grounding", "implied_label_match", "leakage_rate", "mean_words", "distinct_2",
               "loop_rate",
               "judge_score", "judge_factual_alignment", "judge_interpretive_quality",
               "judge_completeness", "judge_fluency", "judge_failed")


def evaluation_rows(features: Path | str, manifest: Path | str, split: str,
                    max_clips: int | None = None) -> tuple[pd.DataFrame, pd.DataFrame, object]:
    """(all clips: manifest joined with features, the evaluated clips, manifest metadata).
    The features' transcript (reference, else ASR) replaces the manifest's."""
    df, meta = read_manifest(manifest)
    feats = pd.read_parquet(features)
    missing = sorted(set(df["utt_id"]) - set(feats["utt_id"]))
    if missing:
        raise ValueError(f"{features} lacks {len(missing)} clips of {manifest}, e.g. {missing[:3]}")
    rows = df.drop(columns=["transcript"]).merge(
        feats.drop(columns=[c for c in ("speaker", "gender", "split", "corpus", "duration_s")
                            if c in feats.columns]), on="utt_id", how="left", validate="1:1")
    evaluated = rows if split == "all" else rows[rows["split"] == split]
    if evaluated.empty:
        raise ValueError(f"no clips in split {split!r} of {manifest}")
    if max_clips:
        evaluated = evaluated.iloc[spread(len(evaluated), max_clips)]
    return rows, evaluated.reset_index(drop=True), meta


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def judged_rationales(ordered: pd.DataFrame, cues: dict, labels: list[str],
                      cfg: EvaluateConfig, seed: int) -> tuple[dict, dict]:
    """The LLM judge's scores of a system's non-empty rationales (`components.evaluate.judge`)."""
    from components.distill.records import ClipCues
    from components.evaluate.judge import judge_metrics, judge_rationales

    items = []
    for row in ordered.itertuples():
        if isinstance(row.rationale, str) and row.rationale.strip():
            clip = cues.get(row.utt_id) or ClipCues(utt_id=row.utt_id, transcript="", label="",
                                                     label_set=tuple(labels))
            items.append((clip, row.label, row.rationale))
    return judge_metrics(judge_rationales(cfg.judge, items, seed), cfg.n_boot, seed)


def in_label_set(gold: pd.DataFrame, labels: list[str]) -> pd.DataFrame:
    """The clips scored: a consensus label in the label set, or none (annotator votes only);
    clips whose consensus the model cannot say are counted as `out_of_set`."""
    return gold[(gold["label"] == "") | gold["label"].isin(labels)]


def score_self_correction(params: Params, evaluated: pd.DataFrame, systems: dict, gold,
                          labels: list[str], cues: dict, data_root: str, frames_dir: Path,
                          folders: dict[str, Path], allowed: list[str] | None = None,
                          ) -> dict[str, dict]:
    """System -> {"rows": scored rounds (`refinement.score_rounds`), "predictions":
    instruction -> round frames, "seconds": wall time of its rounds} for each system of
    `folders` (name -> model folder) that was evaluated, when `inference.self_correct_rounds`
    > 0; else empty. `allowed`: the labels the rounds may answer (None: any)."""
    from components.evaluate.refinement import score_rounds
    from components.evaluate.systems import speechlm_refinement

    cfg, inference = params.evaluate, params.inference
    if inference.self_correct_rounds == 0:
        return {}
    in_set = in_label_set(gold, labels)
    out = {}
    for name, folder in folders.items():
        if name not in systems:
            print(f"self-correction: {name} was not evaluated, skipped")
            continue
        start = time.perf_counter()
        rounds = speechlm_refinement(Path(folder), evaluated, systems[name],
                                     frames_dir, data_root, inference, cfg.max_new_tokens,
                                     cfg.batch_size, params.base.device, allowed)
        keep = systems[name]["utt_id"].isin(in_set["utt_id"])
        rows = score_rounds(in_set, systems[name][keep],
                            {k: [f[f["utt_id"].isin(in_set["utt_id"])] for f in frames]
                             for k, frames in rounds.items()},
                            labels, cues, cfg.n_boot, params.base.seed)
        out[name] = {"rows": rows, "predictions": rounds,
                     "seconds": round(time.perf_counter() - start, 1)}
    return out


def write_self_correction(refined: dict[str, dict], rounds: int, out: Path) -> dict[str, Path]:
    """`self_correction.json` (DVC metrics: system -> instruction -> round_k -> figures, and
    the flips), per-system CSV tables, pictures and round predictions; returns the pictures."""
    from components.evaluate.refinement import refinement_png, refinement_table

    images, metrics = {}, {"rounds": rounds, "systems": {}}
    for name, entry in refined.items():
        per = metrics["systems"].setdefault(name, {})
        for row in entry["rows"]:
            cell = {k: _finite(v) for k, v in row.items()
                    if k not in ("instruction", "round")}
            per.setdefault(row["instruction"], {})[f"round_{row['round']}"] = cell
        refinement_table(entry["rows"]).to_csv(out / "tables" / f"self_correction_{name}.csv",
                                               index=False)
        frames = [f.assign(instruction=k, round=i + 1)
                  for k, fs in entry["predictions"].items() for i, f in enumerate(fs)]
        pd.concat(frames).assign(probabilities=lambda d: d["probabilities"].map(json.dumps)) \
            .to_parquet(out / "predictions" / f"self_correction_{name}.parquet", index=False)
        images[f"self-correction: {name}"] = refinement_png(
            entry["rows"], out / "figures" / f"self_correction_{name}.png",
            f"{name}: self-correction rounds")
    (out / "self_correction.json").write_text(json.dumps(metrics, indent=2, allow_nan=False)
                                              + "\n")
    return images


def score_systems(gold: pd.DataFrame, systems: dict[str, pd.DataFrame], labels: list[str],
                  cues: dict, cfg: EvaluateConfig, seed: int) -> dict:
    """metrics.json's `systems` (point values, `ci`, `out_of_set`) and `pvalues`, plus the
    per-class, per-slice and reliability tables (not serialised)."""
    from components.evaluate.metrics import (
        bootstrap_ci,
        paired_bootstrap_pvalue,
        per_class,
        point_metrics,
        reliability,
        slices,
    )
    from components.evaluate.rationale_quality import (
        rationale_bootstrap_ci,
        rationale_metrics,
        rationale_rows,
    )

    in_set = in_label_set(gold, labels)
    out_of_set = len(gold) - len(in_set)
    result: dict = {"systems": {}, "pvalues": [], "tables": {}}
    for name, pred in systems.items():
        pred = pred[pred["utt_id"].isin(in_set["utt_id"])]
        values = point_metrics(in_set, pred, labels)
        ci = bootstrap_ci(in_set, pred, labels, n_boot=cfg.n_boot, seed=seed)
        if "rationale" in pred and pred["rationale"].notna().any():
            ordered = in_set[["utt_id"]].merge(pred, on="utt_id", how="left")
            args = (ordered["rationale"].tolist(), ordered["label"].tolist(),
                    [cues.get(u) for u in ordered["utt_id"]])
            values.update(rationale_metrics(*args, labels=labels))
            ci.update(rationale_bootstrap_ci(rationale_rows(*args, labels=labels),
                                             n_boot=cfg.n_boot, seed=seed))
            if cfg.judge.enabled:
                judged, judged_ci = judged_rationales(ordered, cues, labels, cfg, seed)
                values.update(judged)
                ci.update(judged_ci)
        entry = {k: _finite(v) for k, v in values.items()}
        entry["out_of_set"] = out_of_set
        entry["ci"] = {k: v for k, v in ci.items() if all(map(math.isfinite, v))}
        result["systems"][name] = entry
        result["tables"][name] = {"per_class": per_class(in_set, pred, labels),
                                  "slices": slices(in_set, pred, labels),
                                  "reliability": reliability(in_set, pred, labels)
                                  if pred["probabilities"].notna().all() else None}
    models = [n for n in systems if n not in ("majority", cfg.reference)]
    pairs = [(m, cfg.reference) for m in models if cfg.reference in systems]
    if "sft" in systems and "rl" in systems:
        pairs.append(("rl", "sft"))
    for a, b in pairs:
        for metric in ("ua", "annotator_aware_macro_f1"):
            test = paired_bootstrap_pvalue(in_set, systems[a], systems[b], labels, metric=metric,
                                           n_boot=cfg.n_boot, seed=seed)
            result["pvalues"].append({**test, "a": a, "b": b, "a_value": test["a"],
                                      "b_value": test["b"]})
    return result


def write_outputs(scored: dict, gold: pd.DataFrame, systems: dict[str, pd.DataFrame],
                  labels: list[str], meta: dict, out: Path, refined: dict | None = None,
                  rounds: int = 0) -> Path:
    """metrics.json, self_correction.json, predictions, DVC plot rows, tables, pictures and
    report.html."""
    from components.evaluate.report import (
        confusion_png,
        html_report,
        reliability_png,
        write_dvc_plot_rows,
    )

    for sub in ("predictions", "plots", "tables", "figures"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    images: dict[str, Path] = {}
    for name, pred in systems.items():
        pred.assign(probabilities=[json.dumps(p) if p else None for p in pred["probabilities"]]
                    ).to_parquet(out / "predictions" / f"{name}.parquet", index=False)
        write_dvc_plot_rows(gold, pred, name, out / "plots" / f"confusion_{name}.csv")
        tables = scored["tables"][name]
        tables["per_class"].to_csv(out / "tables" / f"per_class_{name}.csv", index=False)
        tables["slices"].to_csv(out / "tables" / f"slices_{name}.csv", index=False)
        images[f"confusion: {name}"] = confusion_png(
            gold, pred, labels, out / "figures" / f"confusion_{name}.png", name)
        if tables["reliability"] is not None:
            images[f"reliability: {name}"] = reliability_png(
                tables["reliability"], out / "figures" / f"reliability_{name}.png", name)
    images.update(write_self_correction(refined or {}, rounds, out))
    metrics = {**meta, "systems": scored["systems"], "pvalues": scored["pvalues"]}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, allow_nan=False) + "\n")
    table = pd.DataFrame({name: {k: v for k, v in m.items() if k not in ("ci",)}
                          for name, m in scored["systems"].items()}).T
    html_report(table, {n: m["ci"] for n, m in scored["systems"].items()}, scored["pvalues"],
                {n: t["per_class"] for n, t in scored["tables"].items()},
                {n: t["slices"] for n, t in scored["tables"].items()}, images, meta,
                out / "report.html", self_correction={
                    name: entry["rows"] for name, entry in (refined or {}).items()})
    return out / "metrics.json"


def log_to_mlflow(params: Params, scored: dict, out: Path, meta: dict,
                  refined: dict | None = None) -> None:
    """One run per system (same metric names, for the UI's comparison), then the evaluate
    stage's run with the report. The evaluate run comes last so that a `dvc repro` ending
    here closes the pipeline's parent after every system run."""
    import mlflow

    from components.config import as_dict
    from components.evaluate.refinement import ROUND_KEYS
    from components.tracking import stage_run

    for name, entry in scored["systems"].items():
        with stage_run("evaluate", params.tracking, run_name=f"evaluate/{name}",
                       tags={"emoreason.system": name, "emoreason.kind": "evaluation"}):
            mlflow.log_metrics({k: float(entry[k]) for k in MLFLOW_KEYS
                                if entry.get(k) is not None})
            mlflow.log_metrics({f"{k}_ci_low": v[0] for k, v in entry["ci"].items()
                                if k in MLFLOW_KEYS})
            mlflow.log_metrics({f"{k}_ci_high": v[1] for k, v in entry["ci"].items()
                                if k in MLFLOW_KEYS})
            mlflow.log_params({"system": name, "corpus": meta["corpus"],
                               "split": meta["split"], "n": entry["n"]})
            for sub, pattern in (("figures", f"*_{name}.png"), ("tables", f"*_{name}.csv")):
                for path in sorted((out / sub).glob(pattern)):
                    mlflow.log_artifact(str(path), artifact_path=sub)
    with stage_run("evaluate", params.tracking, {"evaluate": as_dict(params.evaluate),
                                                  "inference": as_dict(params.inference)}):
        for name, entry in (refined or {}).items():
            rows = entry["rows"]
            for instruction in dict.fromkeys(r["instruction"] for r in rows[1:]):
                for row in [rows[0]] + [r for r in rows if r["instruction"] == instruction]:
                    mlflow.log_metrics({f"self_correction/{name}/{instruction}/{k}": float(row[k])
                                        for k in (*ROUND_KEYS, "grounding")
                                        if _finite(row[k]) is not None},
                                       step=row["round"])
        mlflow.log_artifact(str(out / "report.html"))
        mlflow.log_artifact(str(out / "self_correction.json"))
        mlflow.log_artifact(str(out / "metrics.json"))
        mlflow.log_dict({"pvalues": scored["pvalues"]}, "pvalues.json")


def collect_systems(params: Params, rows: pd.DataFrame, evaluated: pd.DataFrame,
                    labels: list[str], data_root: str, frames_dir: Path) -> tuple[
                        dict[str, pd.DataFrame], dict]:
    """Every configured system's predictions on `evaluated`, and what each was fitted with."""
    from components.evaluate.baselines import EGEMAPS_COLUMNS, egemaps_lr, majority
    from components.evaluate.systems import encoder_predictions, speechlm_predictions

    cfg = params.evaluate
    ids = evaluated["utt_id"].tolist()
    train = rows[(rows["split"] == "train") & rows["label"].isin(labels)]
    systems, info = {}, {}
    systems["majority"], info["majority"] = majority(train["label"].tolist(), ids, labels)
    for name, column in EGEMAPS_COLUMNS.items():
        pred, info[name] = egemaps_lr(rows, column, labels, cfg.lr_c_grid, params.base.seed,
                                      cfg.split)
        systems[name] = pred.set_index("utt_id").loc[ids].reset_index()
    models = {name: Path(folder) for name, folder in cfg.models.items()
              if (Path(folder) / "task.json").exists()}
    if cfg.encoder_of in models:
        from components.speechlm.pretrain import CLASSIFIER_FILE

        if (models[cfg.encoder_of] / CLASSIFIER_FILE).exists():
            systems["encoder"], _ = encoder_predictions(models[cfg.encoder_of], evaluated,
                                                        frames_dir, data_root,
                                                        device=params.base.device)
    for name, folder in models.items():
        start = time.perf_counter()
        systems[name], model_labels = speechlm_predictions(
            folder, evaluated, frames_dir, data_root, cfg.rationale, cfg.max_new_tokens,
            cfg.batch_size, params.base.device, params.inference)
        if model_labels != labels:
            raise ValueError(f"{folder} was trained on labels {model_labels}, the manifest has "
                             f"{labels}: evaluate it with `emoreason evaluate --model`")
        task = json.loads((folder / "task.json").read_text())
        info[name] = {"folder": str(folder), "label_temperature": task.get("label_temperature"),
                      "seconds": round(time.perf_counter() - start, 1)}
        print(f"evaluate: {name} scored {len(ids)} clips in {info[name]['seconds']} s")
    return systems, info


def run_evaluate(params: Params, out: Path) -> dict:
    """Score every system on `evaluate.split`; write the outputs; log them to MLflow."""
    from components.evaluate.metrics import votes_per_clip
    from components.evaluate.rationale_quality import load_clip_cues

    cfg = params.evaluate
    rows, evaluated, meta = evaluation_rows(cfg.features, cfg.manifest, cfg.split,
                                            cfg.max_clips)
    labels = list(meta.labels)
    frames_dir = Path(cfg.features).parent / "frames"
    systems, info = collect_systems(params, rows, evaluated, labels, meta.data_root, frames_dir)
    gold = evaluated[GOLD_COLUMNS]
    cues = load_clip_cues(Path(cfg.features), Path(cfg.manifest), sorted(set(evaluated["split"])))
    scored = score_systems(gold, systems, labels, cues, cfg, params.base.seed)
    refined = score_self_correction(params, evaluated, systems, gold, labels, cues,
                                    meta.data_root, frames_dir,
                                    {n: Path(cfg.models[n]) for n in cfg.refine_systems
                                     if n in cfg.models})
    # scoring times go to `<out>.run.json`: metrics.json (a dep of register) stays the same
    seconds = {name: entry.pop("seconds") for name, entry in info.items() if "seconds" in entry}
    report_meta = {"corpus": meta.corpus, "split": cfg.split, "labels": labels,
                   "n_clips": len(gold), "n_speakers": int(gold["speaker"].nunique()),
                   "votes_per_clip": votes_per_clip(gold),
                   "n_boot": cfg.n_boot, "fitted": info}
    out.mkdir(parents=True, exist_ok=True)
    write_run_stats(out, {"seconds": seconds, "self_correction_seconds": {
        name: entry["seconds"] for name, entry in refined.items()}})
    write_outputs(scored, gold, systems, labels, report_meta, out, refined,
                  params.inference.self_correct_rounds)
    log_to_mlflow(params, scored, out, report_meta, refined)
    print_table(scored["systems"])
    for name, entry in refined.items():
        print_self_correction(name, entry["rows"])
    print(f"evaluate: report {out / 'report.html'}")
    return scored["systems"]


def table_lines(systems: dict) -> list[str]:
    """The evaluation table as text lines, figures with their 95% intervals."""
    keys = ("wa", "ua", "macro_f1", "any_annotator_accuracy", "annotator_aware_macro_f1")
    lines = [f"{'system':<20}" + "".join(f"{k:>26}" for k in keys)]
    for name, entry in systems.items():
        cells = []
        for k in keys:
            v, ci = entry.get(k), entry["ci"].get(k)
            cells.append("n/a" if v is None else f"{v:.3f}" + (f" [{ci[0]:.3f},{ci[1]:.3f}]"
                                                                 if ci else ""))
        lines.append(f"{name:<20}" + "".join(f"{c:>26}" for c in cells))
    return lines


def print_table(systems: dict) -> None:
    """The evaluation table on the console."""
    print("\n".join(table_lines(systems)))


def print_self_correction(system: str, rows: list[dict]) -> None:
    """The self-correction table on the console: per instruction and round, UA with its 95%
    interval, grounding and the flips against round 0."""
    print(f"self-correction of {system} (flips against round 0, consensus clips):")
    print(f"{'instruction':<12}{'round':>6}{'UA':>22}{'grounding':>11}{'w->r':>6}{'r->w':>6}"
          f"{'changed':>8}{'p':>7}")
    for r in rows:
        lo, hi = r["ci"].get("ua", [float("nan")] * 2)
        flips = (f"{r['wrong_to_right']:>6}{r['right_to_wrong']:>6}{r['label_changed']:>8}"
                 f"{r['mcnemar_p']:>7.2f}" if r["round"] else "")
        print(f"{r['instruction']:<12}{r['round']:>6}{r['ua']:>10.3f} [{lo:.3f},{hi:.3f}]"
              f"{r['grounding']:>11.3f}{flips}")
