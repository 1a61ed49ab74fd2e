"""Two models of each speaker fold, paired on the pooled test clips: is model A (e.g. an SFT
model trained with other params) better than model B (e.g. the default `sft`)?

Runs on the folds of benchmarks/bench_quality.py. Each model's test predictions are read from
an evaluation of its fold that scored it: the fold's own evaluation first, then the others
under `reports/` by name, so no model is predicted twice (the evaluate stage is
deterministic for a model and a fold's params; the folder used is printed). A model that no
evaluation scored is evaluated alone into `reports/evaluate_<name>`. Printed: both
models' metrics with 95% bootstrap intervals on every test clip of the folds, the paired
bootstrap of A against B (UA, annotator-aware F1, Brier score, ECE, JS divergence), how many
labels differ, and how sure each model is: the share of clips whose top label gets more than
0.99, the wrong answers among them, and the expected share of 8 answers sampled from the label
probabilities that all agree (GRPO's groups of 8 learn nothing from such a clip).

Run: python benchmarks/bench_compare.py sft_ls10 sft [--folds 0 1 2] [--work DIR]
"""
import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import yaml  # noqa: E402
from bench_quality import fold_predictions, print_systems  # noqa: E402
from bench_rl_quality import changed, paired_tests, stage  # noqa: E402

COMPARED = ("ua", "annotator_aware_macro_f1", "brier", "ece", "jsd")
GROUP = 8


def evaluation_of(folder: Path, name: str) -> str:
    """The evaluation folder (relative to the fold) whose predictions hold model `name`; when
    none has, the evaluate stage scores it alone into `reports/evaluate_<name>`."""
    params = yaml.safe_load((folder / "params.yaml").read_text())
    own = params["evaluate"]["out"]
    others = sorted(p.parent.parent.relative_to(folder).as_posix()
                    for p in (folder / "reports").glob(f"*/predictions/{name}.parquet"))
    for out in (own, *others):
        if (folder / out / "predictions" / f"{name}.parquet").exists():
            return out
    if not (folder / "models" / name).is_dir():
        raise SystemExit(f"{folder}: no model {name!r} in models/ and no evaluation of it")
    out = f"reports/evaluate_{name}"
    stage(folder, {**params, "evaluate": {**params["evaluate"], "out": out,
                                          "models": {name: f"models/{name}"},
                                          "encoder_of": name, "refine_systems": [name]}},
          f"evaluate_{name}", ["evaluate"])
    return out


def sureness(gold: pd.DataFrame, pred: pd.DataFrame) -> dict[str, float]:
    """Share of clips with top probability > 0.99, wrong answers among those (against the
    consensus label) and the expected share of `GROUP` sampled answers that all agree."""
    probs = np.array([[p[k] for k in sorted(p)] for p in pred["probabilities"]])
    top = probs.max(axis=1)
    truth = gold.set_index("utt_id").loc[pred["utt_id"], "label"].to_numpy()
    sure = top > 0.99
    return {"top_over_0.99": float(sure.mean()),
            "wrong_and_over_0.99": int((sure & (pred["label"].to_numpy() != truth)).sum()),
            f"all_{GROUP}_agree": float((probs ** GROUP).sum(axis=1).mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a", help="the fold model compared (models/A)")
    parser.add_argument("b", help="the fold model it is compared with (models/B)")
    parser.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--work", type=Path, default=REPO / ".emoreason" / "bench_quality")
    parser.add_argument("--n-boot", type=int, default=1000)
    args = parser.parse_args()
    from components.config import load_params
    from components.evaluate.stage import in_label_set, score_systems

    if args.a == args.b:
        raise SystemExit("name two different models")
    golds, preds, cues, labels = [], {args.a: [], args.b: []}, {}, None
    for k in args.folds:
        folder = args.work / f"fold{k}"
        if not (folder / "params.yaml").exists():
            raise SystemExit(f"{folder}: no fold (run benchmarks/bench_quality.py)")
        for name in (args.a, args.b):
            out = evaluation_of(folder, name)
            print(f"fold {k}: {name} from {out}")
            gold, systems, fold_cues, labels = fold_predictions(folder, (name,), out)
            preds[name].append(systems[name])
        golds.append(gold)
        cues.update(fold_cues)
    gold = in_label_set(pd.concat(golds, ignore_index=True), labels)
    pooled = {n: pd.concat(p, ignore_index=True) for n, p in preds.items()}
    cfg = load_params(args.work / f"fold{args.folds[0]}" / "params.yaml").evaluate
    cfg.n_boot = args.n_boot
    scored = score_systems(gold, pooled, labels, cues, cfg, seed=0)
    names = (args.b, args.a)
    print_systems(f"pooled over folds {args.folds} ({len(gold)} clips)", scored["systems"],
                  names, names)
    print(f"\n{args.a} vs {args.b}: {changed(pooled[args.a], pooled[args.b], 'label')} of "
          f"{len(gold)} labels differ")
    tests = paired_tests(gold, pooled[args.a], pooled[args.b], labels, COMPARED, args.n_boot)
    sure = {n: sureness(gold, pooled[n]) for n in names}
    for name, figures in sure.items():
        print(f"{name}: " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                      for k, v in figures.items()))
    path = args.work / f"compare_{args.a}_vs_{args.b}.json"
    path.write_text(json.dumps({"a": args.a, "b": args.b, "folds": args.folds,
                                "pooled": scored["systems"], "paired": tests,
                                "sureness": sure}, indent=2, default=str) + "\n")
    print(f"written {path}")


if __name__ == "__main__":
    main()
