"""Does the label temperature fitted on dev calibrate the test probabilities of unseen actors?

Runs on the folds of benchmarks/bench_quality.py, for model folders that exist there (e.g. `sft`,
or RL models of benchmarks/bench_rl_quality.py). For each fold and model, the SFT and RL stages'
own code (`components.speechlm.calibration.calibrate_folder_task`) fits the temperature on the
fold's dev actors; the model's stored test predictions (`bench_compare.evaluation_of`) are
brought back to the LM's own probabilities (the temperature saved in the folder, if any, undone)
and scaled by the dev one. Printed: the temperature and the dev NLL per fold, then on every
test clip of the folds the metrics of both with 95% bootstrap intervals, the paired bootstrap
(Brier score, ECE, JS divergence; the labels are the same by construction, which is checked),
and how sure each is (`bench_compare.sureness`). An RL model trained on dev prompts
(`rl.splits: [dev]`) is fitted here on clips it trained on, which the stage refuses
(`rl.calibrate`): read its row as an optimistic one.

Run: python benchmarks/bench_calibration.py sft sft_ls10 [--folds 0 1 2] [--work DIR]
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
from bench_compare import evaluation_of, sureness  # noqa: E402
from bench_quality import fold_predictions, print_systems  # noqa: E402
from bench_rl_quality import paired_tests  # noqa: E402

COMPARED = ("brier", "ece", "jsd")


def rescaled(probabilities: dict, undo: float, temperature: float) -> dict:
    """Label -> p of probabilities made at temperature `undo`, remade at `temperature`."""
    labels = list(probabilities)
    log_p = np.log(np.clip([probabilities[x] for x in labels], 1e-300, 1.0)) * undo / temperature
    p = np.exp(log_p - log_p.max())
    return dict(zip(labels, (p / p.sum()).tolist()))


def fold_temperature(folder: Path, name: str) -> tuple[dict, float]:
    """(the calibration summary of model `name` on the fold's dev clips, the temperature saved
    in its folder: 1 if none)."""
    import torch

    from components.speechlm.calibration import calibrate_folder_task
    from components.speechlm.io import load_speechlm

    params = yaml.safe_load((folder / "params.yaml").read_text())
    model_dir = folder / "models" / name
    task = json.loads((model_dir / "task.json").read_text())
    model, tokenizer = load_speechlm(model_dir)
    rl = params["rl"]  # the fold's feature paths, as the RL stage reads them
    fitted = calibrate_folder_task(model.eval(), tokenizer, task, str(folder / rl["features"]),
                                   str(folder / rl["frames"]), str(folder / rl["manifest"]),
                                   torch.device("cpu"), params["base"]["seed"])
    if fitted is None:
        raise SystemExit(f"{model_dir}: its format cannot be calibrated")
    return fitted, float(task.get("label_temperature", 1.0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="fold models (models/NAME)")
    parser.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--work", type=Path, default=REPO / ".emoreason" / "bench_quality")
    parser.add_argument("--n-boot", type=int, default=1000)
    args = parser.parse_args()
    from components.config import load_params
    from components.evaluate.stage import in_label_set, score_systems

    report = {}
    for name in args.models:
        golds, raw, scaled, cues, labels, fits = [], [], [], {}, None, []
        for k in args.folds:
            folder = args.work / f"fold{k}"
            fitted, saved = fold_temperature(folder, name)
            print(f"fold {k} {name}: temperature {fitted['label_temperature']:.3f} on "
                  f"{fitted['calibration_clips']} dev clips, NLL "
                  f"{fitted['calibration_nll_before']:.3f} -> "
                  f"{fitted['calibration_nll_after']:.3f} (saved {saved:g})", flush=True)
            gold, systems, fold_cues, labels = fold_predictions(folder, (name,),
                                                                evaluation_of(folder, name))
            pred = systems[name]
            own = pred.assign(probabilities=[rescaled(p, saved, 1.0)
                                             for p in pred["probabilities"]])
            new = pred.assign(probabilities=[rescaled(p, saved, fitted["label_temperature"])
                                             for p in pred["probabilities"]])
            golds.append(gold)
            raw.append(own)
            scaled.append(new)
            cues.update(fold_cues)
            fits.append({**fitted, "fold": k, "saved": saved})
        gold = in_label_set(pd.concat(golds, ignore_index=True), labels)
        pooled = {name: pd.concat(raw, ignore_index=True),
                  f"{name}+T": pd.concat(scaled, ignore_index=True)}
        top = {n: [max(p, key=p.get) for p in d["probabilities"]] for n, d in pooled.items()}
        if top[name] != top[f"{name}+T"]:
            raise SystemExit("a temperature changed a label: the probabilities are not the "
                             "model's")
        cfg = load_params(args.work / f"fold{args.folds[0]}" / "params.yaml").evaluate
        cfg.n_boot = args.n_boot
        scored = score_systems(gold, pooled, labels, cues, cfg, seed=0)
        names = list(pooled)
        print_systems(f"{name}: pooled over folds {args.folds} ({len(gold)} clips)",
                      scored["systems"], names, names)
        tests = paired_tests(gold, pooled[f"{name}+T"], pooled[name], labels, COMPARED,
                             args.n_boot)
        sure = {n: sureness(gold, pooled[n]) for n in names}
        for n, figures in sure.items():
            print(f"{n}: " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                       for k, v in figures.items()))
        report[name] = {"folds": fits, "pooled": {n: scored["systems"][n] for n in names},
                        "paired": tests, "sureness": sure}
    path = args.work / f"calibration_{'_'.join(args.models)}.json"
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"written {path}")


if __name__ == "__main__":
    main()
