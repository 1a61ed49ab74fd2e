"""GRPO-PTR on RAVDESS: does reinforcement from the SFT model change what it answers on speakers
it never heard, against SFT and against the outcome-only ablation?

Runs on the folds of benchmarks/bench_quality.py, which must have finished them (each fold's
SFT model, features and gated manifest are read from `WORK/fold<k>`). Per fold, for each
ablation (`none` is GRPO-PTR as configured), the `rl` stage runs from the fold's SFT model
with the fold's params and `--set` over them, `--steps` steps, into
`models/rl_<tag>[_<ablation>]`; then the evaluate stage scores `sft` (`--sft`: another SFT
model of the fold, e.g. one trained with other params) and those models on the
fold's test clips (`reports/evaluate_rl_<tag>`). Printed per fold and pooled over the folds
(every test clip once): UA / WA / macro-F1 / annotator-aware F1 with 95% bootstrap intervals,
the rationale figures, the paired bootstrap of each RL model against `sft` (UA, annotator-aware
F1, Brier score), how many test labels and rationales differ from SFT's, and per run its
minutes and training signal (first and last ten steps: outcome reward, shares of groups whose
outcome rewards and whose total rewards are all equal, running training accuracy, whether the
reasoning reward counts). A finished run is read, not re-run, and so is an evaluation that
scored every model asked for.

Run: python benchmarks/bench_rl_quality.py --tag lr4_dev --set rl.learning_rate=0.0001
     rl.splits=[dev] rl.calibrate=false [--steps 40] [--folds 0 1 2]
     [--ablations none outcome_only] [--work DIR]
(dev prompts leave no held-out clip to fit the policy's label temperature on:
`rl.calibrate=false`, the policy's own probabilities)
"""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import pandas as pd  # noqa: E402
import yaml  # noqa: E402
from bench_quality import pooled_folds, print_systems  # noqa: E402

SIGNAL = ("reward/outcome", "groups/outcome_all_equal_share", "groups/all_equal_share",
          "train/accuracy", "ptr/schedule_on")
COMPARED = ("ua", "annotator_aware_macro_f1", "brier")


def run_name(tag: str, ablation: str) -> str:
    return f"rl_{tag}" + ("" if ablation == "none" else f"_{ablation}")


def stage(folder: Path, params: dict, name: str, args: list[str]) -> None:
    """Run `emoreason --params params_<name>.yaml <args>` in the fold's folder."""
    from components.config import params_from_dict

    params_from_dict(params)  # a wrong override fails before anything runs
    path = folder / f"params_{name}.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "GX_ANALYTICS_ENABLED": "false",
           "DO_NOT_TRACK": "1", "PYTHONPATH": str(REPO)}
    env.pop("MLFLOW_TRACKING_URI", None)
    command = [sys.executable, "-m", "components.cli", "--params", path.name, *args]
    print(f"{folder.name}: {' '.join(command[1:])}", flush=True)
    with open(folder / f"log_{name}.txt", "a") as log:
        proc = subprocess.run(command, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = (folder / f"log_{name}.txt").read_text().splitlines()[-30:]
        raise SystemExit(f"{folder.name}: {' '.join(args)} failed (exit {proc.returncode}):\n"
                         + "\n".join(tail))


def training_signal(folder: Path, out: str) -> dict[str, list[float]]:
    """The logged per-step series `SIGNAL` of the fold's rl run that wrote `out`."""
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    runs = [r for e in client.search_experiments() for r in client.search_runs(
        [e.experiment_id], filter_string="tags.stage = 'rl'")
        if r.data.params.get("rl.rl.out") == out]
    if not runs:
        return {}
    run = max(runs, key=lambda r: r.info.start_time)
    return {k: [m.value for m in sorted(client.get_metric_history(run.info.run_id, k),
                                        key=lambda m: m.step)] for k in SIGNAL}


def evaluated_systems(folder: Path) -> set[str]:
    """The systems an evaluation folder scored (none when it has not finished): one made
    for fewer ablations is evaluated again, not read."""
    path = folder / "metrics.json"
    return set(json.loads(path.read_text())["systems"]) if path.exists() else set()


def models_to_score(fold: Path, evaluated: Path, shown: tuple[str, ...]) -> list[str]:
    """`shown`, then the fold's models the evaluation folder already scored: evaluating it
    again for a model it lacks must not drop the ones it had."""
    kept = sorted(n for n in evaluated_systems(evaluated) - set(shown)
                  if (fold / "models" / n).is_dir())
    return [*shown, *kept]


def paired_tests(gold: pd.DataFrame, a: pd.DataFrame, b: pd.DataFrame, labels: list,
                 metrics: tuple[str, ...], n_boot: int) -> list[dict]:
    """The paired bootstrap of predictions `a` against `b` on each metric, printed."""
    from components.evaluate.metrics import paired_bootstrap_pvalue

    tests = []
    for metric in metrics:
        test = paired_bootstrap_pvalue(gold, a, b, labels, metric=metric, n_boot=n_boot, seed=0)
        tests.append(test)
        print(f"  {metric}: {test['a']:.4f} vs {test['b']:.4f}, difference "
              f"{test['diff']:+.4f} [{test['ci'][0]:+.4f}, {test['ci'][1]:+.4f}], "
              f"p = {test['p']:.3f}")
    return tests


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def changed(a: pd.DataFrame, b: pd.DataFrame, column: str) -> int:
    joined = a[["utt_id", column]].merge(b[["utt_id", column]], on="utt_id")
    return int((joined[f"{column}_x"] != joined[f"{column}_y"]).sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tag", required=True, help="names this configuration's models")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="params overrides (YAML values), e.g. rl.learning_rate=0.0001")
    parser.add_argument("--sft", default="sft", help="the fold's SFT model (models/SFT) that "
                        "RL starts from and is compared with")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--ablations", nargs="+", default=["none", "outcome_only"],
                        choices=["none", "no_tau", "no_schedule", "outcome_only"])
    parser.add_argument("--work", type=Path, default=REPO / ".emoreason" / "bench_quality")
    parser.add_argument("--n-boot", type=int, default=1000)
    args = parser.parse_args()
    from components.config import load_params
    from components.evaluate.stage import in_label_set, score_systems
    from components.run_stats import read_run_stats
    from flows.ser_pipeline import merge, nest

    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: expected KEY=VALUE")
        overrides[key] = yaml.safe_load(value)
    names = [run_name(args.tag, a) for a in args.ablations]
    shown = (args.sft, *names)
    if "rl.sft" in overrides:
        raise SystemExit("--set rl.sft: name the fold's SFT model with --sft, which RL starts "
                         "from and is compared with")
    overrides["rl.sft"] = f"models/{args.sft}"
    runs = []
    for k in args.folds:
        folder = args.work / f"fold{k}"
        if not (folder / "reports" / "evaluate" / "metrics.json").exists():
            raise SystemExit(f"{folder}: no finished fold (run benchmarks/bench_quality.py)")
        params = yaml.safe_load((folder / "params.yaml").read_text())
        merge(params, nest(overrides))
        for ablation, name in zip(args.ablations, names):
            out = f"models/{name}"
            if not (folder / out / "rl.json").exists():
                extra = [] if ablation == "none" else ["--ablation", ablation]
                stage(folder, params, name,
                      ["rl", "--max-steps", str(args.steps), "--out", out, *extra])
            summary = json.loads((folder / out / "rl.json").read_text())
            runs.append({"fold": k, "model": name, "steps": summary["steps"],
                         "minutes": read_run_stats(folder / out).get("train_minutes",
                                                                     float("nan")),
                         "clips": summary.get("clips"),
                         **training_signal(folder, out)})
        evaluated = f"reports/evaluate_rl_{args.tag}"
        if not set(shown) <= evaluated_systems(folder / evaluated):
            models = models_to_score(folder, folder / evaluated, shown)
            scored = {**params, "evaluate": {**params["evaluate"], "out": evaluated,
                                             "models": {n: f"models/{n}" for n in models},
                                             "encoder_of": args.sft,
                                             "refine_systems": [args.sft]}}
            stage(folder, scored, f"evaluate_rl_{args.tag}", ["evaluate"])
        fold = json.loads((folder / evaluated / "metrics.json").read_text())["systems"]
        print_systems(f"fold {k}", fold, shown, shown)

    gold, pooled, cues, labels = pooled_folds([args.work / f"fold{k}" for k in args.folds],
                                              shown, f"reports/evaluate_rl_{args.tag}")
    gold = in_label_set(gold, labels)
    cfg = load_params(args.work / f"fold{args.folds[0]}" / "params.yaml").evaluate
    cfg.n_boot = args.n_boot
    scored = score_systems(gold, pooled, labels, cues, cfg, seed=0)
    print_systems(f"pooled over folds {args.folds} ({len(gold)} clips)", scored["systems"],
                  shown, shown)
    tests = []
    for name in names:
        print(f"\n{name} vs {args.sft}: {changed(pooled[name], pooled[args.sft], 'label')} of "
              f"{len(gold)} labels and {changed(pooled[name], pooled[args.sft], 'rationale')} "
              "rationales differ")
        tests += [{"model": name, **test} for test in paired_tests(
            gold, pooled[name], pooled[args.sft], labels, COMPARED, args.n_boot)]
    print("\n== training (first 10 steps -> last 10 steps)")
    for run in runs:
        signal = ", ".join(f"{s} {mean(run.get(s, [])[:10]):.2f} -> "
                           f"{mean(run.get(s, [])[-10:]):.2f}" for s in SIGNAL)
        print(f"fold {run['fold']} {run['model']}: {run['steps']} steps on {run['clips']} "
              f"clips, {run['minutes']:.1f} min; {signal}")
    summary = {"tag": args.tag, "overrides": overrides, "steps": args.steps,
               "pooled": scored["systems"], "paired_vs_sft": tests, "runs": runs}
    path = args.work / f"rl_{args.tag}.json"
    path.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(f"written {path}")


if __name__ == "__main__":
    main()
