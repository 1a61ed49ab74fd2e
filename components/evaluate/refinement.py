"""Self-correction rounds scored beside the first answer (arXiv 2505.11924).

For a model system, every configured follow-up instruction (`inference.instructions`) and the
control follow-up (`inference.control`, a turn of about the same length that asks for
nothing) run K rounds through the serving predictor (`Predictor.self_correct`). Each round
is scored like a system (WA, UA, any-annotator accuracy, grounding, well-formed share, with
95% bootstrap intervals on the same resamples as round 0) and compared with round 0 clip by
clip: a flip table over consensus clips (wrong -> right, right -> wrong, unchanged) and an
exact McNemar test of the two flip counts (scipy's binomial test), which is the question a
correction instruction must answer: does it fix more answers than it breaks, and more than
the control does?
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import binomtest

from components.evaluate.metrics import bootstrap_ci, clip_table, point_metrics
from components.evaluate.rationale_quality import (
    rationale_bootstrap_ci,
    rationale_metrics,
    rationale_rows,
)

CONTROL = "control"
"""The row name of the control follow-up."""
ROUND_KEYS = ("wa", "ua", "any_annotator_accuracy")
"""Label metrics of a round (`point_metrics` keys); grounding and well_formed are added."""


def flips(gold: pd.DataFrame, before: pd.DataFrame, after: pd.DataFrame,
          labels: list[str]) -> dict[str, float]:
    """Clip-level changes from `before` to `after` on the consensus clips: counts of wrong ->
    right, right -> wrong, right kept, wrong kept (same label), wrong changed (another wrong
    label), label changed (any clip), and the exact McNemar p-value of wrong->right against
    right->wrong (1.0 when nothing flipped)."""
    a, b = clip_table(gold, before, labels), clip_table(gold, after, labels)
    scored = a.truth >= 0
    ok_a, ok_b = (a.pred == a.truth)[scored], (b.pred == b.truth)[scored]
    same = (a.pred == b.pred)[scored]
    up, down = int((~ok_a & ok_b).sum()), int((ok_a & ~ok_b).sum())
    return {
        "wrong_to_right": up, "right_to_wrong": down,
        "right_kept": int((ok_a & ok_b).sum()),
        "wrong_kept": int((~ok_a & ~ok_b & same).sum()),
        "wrong_changed": int((~ok_a & ~ok_b & ~same).sum()),
        "label_changed": int((a.pred != b.pred).sum()),
        "mcnemar_p": float(binomtest(up, up + down, 0.5).pvalue) if up + down else 1.0,
    }


def round_scores(gold: pd.DataFrame, pred: pd.DataFrame, labels: list[str], cues: dict,
                 n_boot: int, seed: int) -> tuple[dict, dict]:
    """(values, 95% intervals) of one round's predictions: ROUND_KEYS, grounding and the
    well-formed share."""
    values = {k: point_metrics(gold, pred, labels)[k] for k in ROUND_KEYS}
    ci = {k: v for k, v in bootstrap_ci(gold, pred, labels, n_boot=n_boot, seed=seed).items()
          if k in ROUND_KEYS}
    ordered = gold[["utt_id"]].merge(pred, on="utt_id", how="left")
    args = (ordered["rationale"].tolist(), ordered["label"].tolist(),
            [cues.get(u) for u in ordered["utt_id"]])
    values["grounding"] = rationale_metrics(*args, labels=labels)["grounding"]
    ci.update({k: v for k, v in rationale_bootstrap_ci(
        rationale_rows(*args, labels=labels), n_boot=n_boot, seed=seed).items()
        if k == "grounding"})
    values["well_formed"] = float(ordered["well_formed"].fillna(False).astype(bool).mean())
    return values, ci


def score_rounds(gold: pd.DataFrame, first: pd.DataFrame,
                 rounds: dict[str, list[pd.DataFrame]], labels: list[str], cues: dict,
                 n_boot: int, seed: int) -> list[dict]:
    """One row per (instruction, round): round 0 once (instruction "-"), then each
    instruction's rounds 1..K with its flips against round 0. Values in the row, intervals
    under `ci`."""
    values, ci = round_scores(gold, first, labels, cues, n_boot, seed)
    rows = [{"instruction": "-", "round": 0, **values, "ci": ci}]
    for name, preds in rounds.items():
        for k, pred in enumerate(preds, start=1):
            values, ci = round_scores(gold, pred, labels, cues, n_boot, seed)
            rows.append({"instruction": name, "round": k, **values,
                         **flips(gold, first, pred, labels), "ci": ci})
    return rows


def frame_of(results: list[dict], ids: list[str]) -> pd.DataFrame:
    """Predictor results in the evaluate stage's prediction shape."""
    return pd.DataFrame({
        "utt_id": ids, "label": [r["label"] for r in results],
        "probabilities": [r["probabilities"] for r in results],
        "rationale": [r["rationale"] for r in results],
        "well_formed": [r["well_formed"] for r in results],
        "output": [r["output"] for r in results],
    })


def run_rounds(predictor, clips: list, first: pd.DataFrame, instructions: dict[str, str],
               control: str, rounds: int, batch_size: int) -> dict[str, list[pd.DataFrame]]:
    """Each instruction's (and the control's) rounds 1..K, starting from `first`'s answers."""
    ids = first["utt_id"].tolist()
    start = first.to_dict("records")
    out = {}
    for name, text in {**instructions, CONTROL: control}.items():
        print(f"self-correction: {name}, {rounds} round(s) on {len(ids)} clips")
        results = predictor.self_correct(clips, start, text, rounds, batch_size, progress=True)
        out[name] = [frame_of(r, ids) for r in results]
    return out


def refinement_png(rows: list[dict], path: Path | str, title: str) -> Path:
    """UA and grounding per round, one line per instruction (round 0 shared), with the 95%
    intervals as bars."""
    from matplotlib.figure import Figure

    from components.evaluate.report import save_figure

    fig = Figure(figsize=(9, 3.6))
    base = rows[0]
    names = list(dict.fromkeys(r["instruction"] for r in rows[1:]))
    for ax, key in zip(fig.subplots(1, 2), ("ua", "grounding")):
        for j, name in enumerate(names):
            series = [base] + [r for r in rows[1:] if r["instruction"] == name]
            x = np.array([r["round"] for r in series], dtype=float) + (j - len(names) / 2) * 0.04
            y = np.array([r[key] for r in series], dtype=float)
            lo = np.array([r["ci"].get(key, [v, v])[0] for r, v in zip(series, y)])
            hi = np.array([r["ci"].get(key, [v, v])[1] for r, v in zip(series, y)])
            ax.errorbar(x, y, yerr=[y - lo, hi - y], marker="o", capsize=3, label=name,
                        linestyle="--" if name == CONTROL else "-")
        ax.set_xlabel("round (0 = first answer)")
        ax.set_ylabel(key)
        ax.set_xticks(sorted({r["round"] for r in rows}))
        ax.grid(alpha=0.3)
    fig.axes[0].legend(fontsize=8)
    fig.suptitle(title)
    return save_figure(fig, path)


def refinement_table(rows: list[dict]) -> pd.DataFrame:
    """The rows as a table for the report and the CSV (intervals as `key_lo`/`key_hi`)."""
    table = []
    for r in rows:
        row = {k: v for k, v in r.items() if k != "ci"}
        for key, (lo, hi) in r["ci"].items():
            row[f"{key}_lo"], row[f"{key}_hi"] = lo, hi
        table.append(row)
    return pd.DataFrame(table)
