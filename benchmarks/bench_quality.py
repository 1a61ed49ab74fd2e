"""Speaker-fold cross-validation on RAVDESS: does the SpeechLM beat the classical baseline on
speakers it never heard?

Three folds over the twelve shared actors: each holds out four actors (two female, two male)
for test, takes two others (one of each) for dev and trains on the remaining six, so every clip
is scored once as a test clip. Per fold the pipeline's stage commands run in their own folder
(`WORK/fold<k>`: prepare, manifest gate, features, features gate, distill, rationales gate,
sft, evaluate: what `dvc repro evaluate` runs without rl and zeroshot) with the project's
params.yaml, the `ravdess` profile and the fold's speakers. Printed per fold and pooled over
the folds (every clip once): UA / WA / macro-F1 / annotator-aware F1 with 95% bootstrap
intervals for `majority`, `egemaps_lr_speaker`, `encoder` and `sft`, the rationale figures of
`sft`, and minutes per fold; then the SFT model's perception answers on the test clips (every
measured pitch, energy, rate and intonation question of every test clip) against the best
constant answer of the same questions, per fold and pooled, with 95% bootstrap intervals of the
difference (the dev figures of `eval.json` are 60 clips a fold). A fold whose params and
outputs are already there is read, not re-run (a killed benchmark resumes at the fold it was
in).

Run: python benchmarks/bench_quality.py [--folds 0 1 2] [--set sft.epochs=3 ...]
     [--data DIR] [--work DIR]
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import pandas as pd  # noqa: E402
import yaml  # noqa: E402

FOLDS = [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]]
"""Test actors of each fold (odd actors are male, even female)."""
SYSTEMS = ("majority", "egemaps_lr_speaker", "encoder", "sft")
RATIONALE_FIGURES = ("grounding", "implied_label_match", "loop_rate", "distinct_2",
                     "mean_words", "well_formed")
STAGES = (["prepare"], ["gate", "manifest"], ["features"], ["gate", "features"], ["distill"],
          ["gate", "rationales"], ["sft"], ["evaluate"])


def actor(n: int) -> str:
    return f"Actor_{n:02d}"


def fold_speakers(k: int) -> tuple[list[str], list[str]]:
    """(test actors, dev actors) of fold k: dev is the first male and the first female actor
    of the next fold, so dev never overlaps test and every actor is in dev once or not."""
    nxt = FOLDS[(k + 1) % len(FOLDS)]
    return [actor(a) for a in FOLDS[k]], [actor(nxt[0]), actor(nxt[1])]


def fold_params(k: int, data: Path, work: Path, overrides: dict) -> dict:
    """The project's params with the ravdess profile, fold k's speakers, shared caches (the
    folds measure the same clips) and `overrides` (dotted keys) over them."""
    from components.config import params_from_dict
    from flows.ser_pipeline import load_profile, merge, nest

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    merge(params, load_profile(REPO, "ravdess"))
    test, dev = fold_speakers(k)
    merge(params, nest({
        "prepare.data_dir": str(data.resolve()),
        "prepare.split.test_speakers": test,
        "prepare.split.dev_speakers": dev,
        "features.cache_dir": str((work / "cache" / "features").resolve()),
        "distill.cache": str((work / "cache" / "distill.jsonl").resolve()),
        "tracking.experiment": "bench_quality",
        **overrides,
    }))
    params_from_dict(params)  # a wrong override fails before anything runs
    return params


def run_fold(k: int, params: dict, folder: Path) -> float:
    """Run the stages of fold k in `folder`; minutes taken (0 when its outputs were there)."""
    metrics = folder / "reports" / "evaluate" / "metrics.json"
    params_file = folder / "params.yaml"
    text = yaml.safe_dump(params, sort_keys=False)
    if metrics.exists() and params_file.exists() and params_file.read_text() == text:
        times = folder / "minutes.txt"
        print(f"fold {k}: already done in {folder}", flush=True)
        return float(times.read_text()) if times.exists() else float("nan")
    folder.mkdir(parents=True, exist_ok=True)
    params_file.write_text(text)
    metrics.unlink(missing_ok=True)
    command = Path(sys.executable).parent / "emoreason"
    env = {**os.environ, "EMOREASON_STAGE_TIMES": str(folder / "stage_times.jsonl"),
           "RAY_AUTH_MODE": "disabled", "GX_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    start = time.perf_counter()
    for stage in STAGES:
        print(f"fold {k}: emoreason {' '.join(stage)}", flush=True)
        with open(folder / "log.txt", "a") as log:
            proc = subprocess.run([str(command), *stage], cwd=folder, env=env, stdout=log,
                                  stderr=subprocess.STDOUT)
        if proc.returncode != 0:
            tail = (folder / "log.txt").read_text().splitlines()[-30:]
            raise SystemExit(f"fold {k}: `emoreason {' '.join(stage)}` failed "
                             f"(exit {proc.returncode}); log {folder / 'log.txt'}:\n"
                             + "\n".join(tail))
    minutes = (time.perf_counter() - start) / 60
    (folder / "minutes.txt").write_text(f"{minutes:.2f}\n")
    return minutes


def fold_predictions(folder: Path, names: tuple[str, ...] = SYSTEMS, out: str | None = None
                     ) -> tuple[pd.DataFrame, dict[str, pd.DataFrame], dict, list]:
    """(gold rows, system -> predictions, clip cues, labels) of a finished fold: the systems
    `names` of its evaluation in `out` (default the fold's `evaluate.out`)."""
    from components.config import load_params
    from components.evaluate.rationale_quality import load_clip_cues
    from components.evaluate.stage import GOLD_COLUMNS, evaluation_rows

    cwd = os.getcwd()
    os.chdir(folder)  # the fold's params name its files relative to its folder
    try:
        cfg = load_params("params.yaml").evaluate
        _, evaluated, meta = evaluation_rows(cfg.features, cfg.manifest, cfg.split)
        cues = load_clip_cues(Path(cfg.features), Path(cfg.manifest), [cfg.split])
    finally:
        os.chdir(cwd)
    systems = {}
    for name in names:
        path = folder / (out or cfg.out) / "predictions" / f"{name}.parquet"
        if path.exists():
            pred = pd.read_parquet(path)
            pred["probabilities"] = [json.loads(p) if isinstance(p, str) else None
                                     for p in pred["probabilities"]]
            systems[name] = pred
    return evaluated[GOLD_COLUMNS], systems, cues, list(meta.labels)


def pooled_folds(folders: list[Path], names: tuple[str, ...] = SYSTEMS, out: str | None = None
                 ) -> tuple[pd.DataFrame, dict[str, pd.DataFrame], dict, list]:
    """`fold_predictions` of every folder concatenated (every test clip once): the systems
    found in all of them."""
    golds, preds, cues, labels = [], {}, {}, None
    for folder in folders:
        gold, systems, fold_cues, labels = fold_predictions(folder, names, out)
        golds.append(gold)
        cues.update(fold_cues)
        for name, pred in systems.items():
            preds.setdefault(name, []).append(pred)
    return (pd.concat(golds, ignore_index=True),
            {n: pd.concat(p, ignore_index=True) for n, p in preds.items()
             if len(p) == len(folders)}, cues, labels)


def test_perception(folder: Path) -> pd.DataFrame:
    """The fold's SFT model asked every measured perception question of its test clips, with
    the speaker-normalised prosody token as the evaluate stage feeds it: one row per question
    (utt_id, task, level, answer, hit)."""
    from components.config import load_params
    from components.distill.stage import read_records
    from components.prepare.schema import read_manifest
    from components.speechlm.collate import AudioSource, SpeechCollator
    from components.speechlm.io import load_speechlm
    from components.speechlm.prosody_vector import load_stats
    from components.speechlm.sft_data import SftDataConfig, build_sft_examples
    from components.speechlm.train import ask_perception

    cwd = os.getcwd()
    os.chdir(folder)
    try:
        params = load_params("params.yaml")
        cfg = params.sft
        manifest, meta = read_manifest(cfg.manifest)
        features = pd.read_parquet(cfg.features)
        ser = build_sft_examples(features, manifest, read_records(cfg.rationales), SftDataConfig(
            fmt=cfg.format, transcript_source=cfg.transcript_source, perception_ratio=0.0,
            splits=[params.evaluate.split], population_norm_share=0.0, label_only_fallback=True,
            prosody_caption=cfg.prosody_caption))
        model, tokenizer = load_speechlm(cfg.out)
        stats = load_stats(Path(cfg.out)) if model.config.prosody_dim else None
        source = AudioSource.from_features(model, cfg.frames, manifest, meta.data_root,
                                           {e["utt_id"] for e in ser}, features, stats)
        rows = ask_perception(model, SpeechCollator(tokenizer, source, list(meta.labels)), ser,
                              features)
    finally:
        os.chdir(cwd)
    return pd.DataFrame(rows)


def perception_table(asked: pd.DataFrame, n_boot: int, seed: int = 0) -> dict[str, dict]:
    """Per task: the model's accuracy, the best constant answer's and the difference, each with
    a 95% bootstrap interval over the questions. The constant is chosen per fold on these very
    questions (`fold` column), which flatters it; pooled, each fold keeps its own."""
    from components.evaluate.metrics import percentile_ci, resample_indices

    table = {}
    for task, rows in asked.groupby("task", sort=False):
        hit = rows["hit"].to_numpy(dtype=float)
        best = rows.groupby("fold")["level"].agg(lambda levels: levels.value_counts().index[0])
        same = (rows["level"] == rows["fold"].map(best)).to_numpy(dtype=float)
        idx = resample_indices(len(rows), n_boot, seed)
        table[task] = {"n": len(rows), "accuracy": hit.mean(), "constant": "/".join(best.unique()),
                       "constant_accuracy": same.mean(), "difference": hit.mean() - same.mean(),
                       "accuracy_ci": percentile_ci(hit[idx].mean(1), 0.05),
                       "difference_ci": percentile_ci(hit[idx].mean(1) - same[idx].mean(1), 0.05)}
    return table


def print_perception(title: str, table: dict[str, dict]) -> None:
    print(f"\n== perception on the test clips, {title}")
    print(f"{'task':<11} {'n':>4}  {'model':<20} {'best constant':<26} difference")
    for task, t in table.items():
        print(f"{task:<11} {t['n']:>4}  {t['accuracy']:.3f} [{t['accuracy_ci'][0]:.3f},"
              f"{t['accuracy_ci'][1]:.3f}]  {t['constant_accuracy']:.3f} ({t['constant']:<18})  "
              f"{t['difference']:+.3f} [{t['difference_ci'][0]:+.3f},"
              f"{t['difference_ci'][1]:+.3f}]")


def print_systems(title: str, systems: dict, names: tuple[str, ...] = SYSTEMS,
                  rationales: tuple[str, ...] = ("sft",)) -> None:
    """The metrics table of `names` and the rationale figures of the systems `rationales`."""
    from components.evaluate.stage import table_lines

    print(f"\n== {title}")
    print("\n".join(table_lines({n: systems[n] for n in names if n in systems})))
    for name in rationales:
        entry = systems.get(name, {})
        figures = [f"{k} {entry[k]:.3f}" for k in RATIONALE_FIGURES if entry.get(k) is not None]
        if figures:
            print(f"{name} rationales: " + ", ".join(figures))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--data", type=Path, default=Path(os.environ.get(
        "EMOREASON_SHARED_DATA", REPO.parent / "shared" / "data")) / "ravdess-dev")
    parser.add_argument("--work", type=Path, default=REPO / ".emoreason" / "bench_quality")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="params overrides (YAML values), e.g. sft.epochs=3")
    parser.add_argument("--n-boot", type=int, default=1000)
    args = parser.parse_args()
    if not (args.data / "Actor_01").is_dir():
        raise SystemExit(f"{args.data} has no RAVDESS actors (Actor_01 ...): pass --data")
    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: expected KEY=VALUE")
        overrides[key] = yaml.safe_load(value)

    from components.config import load_params
    from components.evaluate.stage import score_systems

    minutes = {}
    for k in args.folds:
        folder = args.work / f"fold{k}"
        minutes[k] = run_fold(k, fold_params(k, args.data, args.work, overrides), folder)
        fold_metrics = json.loads((folder / "reports" / "evaluate" / "metrics.json").read_text())
        print_systems(f"fold {k} (test {', '.join(fold_speakers(k)[0])}; "
                      f"{minutes[k]:.1f} min)", fold_metrics["systems"])
    gold, preds, cues, labels = pooled_folds([args.work / f"fold{k}" for k in args.folds])
    cfg = load_params(args.work / f"fold{args.folds[0]}" / "params.yaml").evaluate
    cfg.n_boot = args.n_boot
    pooled = score_systems(gold, preds, labels, cues, cfg, seed=0)
    print_systems(f"pooled over folds {args.folds} ({len(gold)} clips)", pooled["systems"])
    for test in pooled["pvalues"]:
        print(f"paired bootstrap {test['a']} vs {test['b']} on {test['metric']}: "
              f"{test['a_value']:.3f} vs {test['b_value']:.3f}, p = {test['p']:.3f}")
    print("minutes per fold: " + ", ".join(f"fold {k} {m:.1f}" for k, m in minutes.items()))
    asked = {k: test_perception(args.work / f"fold{k}").assign(fold=k) for k in args.folds}
    perception = {f"fold {k}": perception_table(a, args.n_boot) for k, a in asked.items()}
    perception["pooled"] = perception_table(pd.concat(asked.values(), ignore_index=True),
                                            args.n_boot)
    for title, table in perception.items():
        print_perception(title, table)
    summary = {"folds": {k: json.loads((args.work / f"fold{k}" / "reports" / "evaluate" /
                                        "metrics.json").read_text())["systems"]
                         for k in args.folds},
               "pooled": pooled["systems"], "pvalues": pooled["pvalues"], "minutes": minutes,
               "perception": perception, "overrides": overrides}
    (args.work / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(f"written {args.work / 'summary.json'}")


if __name__ == "__main__":
    main()
