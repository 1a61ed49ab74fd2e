"""Pictures, DVC plot data and a self-contained HTML report of the evaluation.

The report is one HTML file with inline CSS and the pictures embedded as data URIs, so it can
be mailed, archived as an artifact or opened offline and still show everything.
Figures are drawn on matplotlib `Figure` objects with the Agg canvas, never through pyplot,
so no global backend state is touched.
"""
from __future__ import annotations

import base64
import html
import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import confusion_matrix

from components.evaluate.metrics import NONE, clip_table

LOWER_IS_BETTER = frozenset({"jsd", "ece", "brier", "leakage_rate", "loop_rate"})
NO_BEST = frozenset({"n", "n_consensus", "claims_per_rationale", "mean_words"})
"""Columns where neither more nor less is better: never bolded."""
COUNT_COLUMNS = frozenset({"n", "n_consensus", "support", "count"})
NONE_NAME = "none"
"""How a missing prediction is written in pictures and plot data."""


def save_figure(fig: Figure, path: Path | str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, format="png", dpi=120, bbox_inches="tight")
    return path


def _consensus_pairs(gold: pd.DataFrame, pred: pd.DataFrame,
                     labels: list[str]) -> tuple[list[str], list[str], tuple[str, ...]]:
    """(actual, predicted, classes) on the consensus clips, NONE written as 'none'."""
    t = clip_table(gold, pred, labels)
    cons = t.consensus
    names = [NONE_NAME if c == NONE else c for c in t.classes]
    actual = [names[i] for i in t.truth[cons]]
    predicted = [names[i] for i in t.pred[cons]]
    return actual, predicted, tuple(names)


def confusion_png(gold: pd.DataFrame, pred: pd.DataFrame, labels: list[str], path: Path | str,
                  title: str) -> Path:
    """Row-normalised confusion matrix of the consensus clips with the counts written in;
    a 'none' column appears when some prediction was missing."""
    actual, predicted, classes = _consensus_pairs(gold, pred, labels)
    rows = [c for c in classes if c != NONE_NAME and (c in labels or c in actual)]
    cols = rows + ([NONE_NAME] if NONE_NAME in predicted else [])
    counts = confusion_matrix(actual, predicted, labels=cols)[:len(rows)] if actual \
        else np.zeros((len(rows), len(cols)), dtype=int)
    totals = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)

    size = 1.6 + 0.75 * max(len(cols), 3)
    fig = Figure(figsize=(size, size * len(rows) / len(cols) + 0.8))
    ax = fig.add_subplot()
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto")
    for i in range(len(rows)):
        for j in range(len(cols)):
            ax.text(j, i, f"{share[i, j]:.2f}\n({counts[i, j]})", ha="center", va="center",
                    fontsize=8, color="white" if share[i, j] > 0.55 else "black")
    ax.set_xticks(range(len(cols)), cols, rotation=40, ha="right")
    ax.set_yticks(range(len(rows)), [f"{r} ({int(n)})" for r, n in zip(rows, totals[:, 0])])
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual (consensus label, clips)")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the actual class")
    return save_figure(fig, path)


def reliability_png(reliability_df: pd.DataFrame, path: Path | str, title: str) -> Path:
    """Reliability diagram: accuracy per confidence bin against the diagonal, bin counts on
    the bars, the ECE in the legend."""
    df = reliability_df
    fig = Figure(figsize=(5.0, 4.6))
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfect")
    total = int(df["count"].sum())
    if total:
        full = df[df["count"] > 0]
        width = (full["bin_upper"] - full["bin_lower"]).to_numpy()
        left = full["bin_lower"].to_numpy()
        ece = float((full["count"] * (full["accuracy"] - full["confidence"]).abs()).sum() / total)
        ax.bar(left, full["accuracy"], width=width, align="edge", color="#4C72B0",
               edgecolor="white", label=f"accuracy (ECE {ece:.3f})")
        ax.plot(full["confidence"], full["confidence"], "o", color="#DD8452", markersize=4,
                label="mean confidence")
        for x, acc, n in zip(left + width / 2, full["accuracy"], full["count"]):
            ax.text(x, acc + 0.01, str(int(n)), ha="center", va="bottom", fontsize=7)
        # below the axes: inside, it hid the bars of sure, right bins
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3, fontsize=8,
                  frameon=False)
    else:
        ax.text(0.5, 0.5, "no label probabilities", ha="center", va="center")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.07)  # room for the count over a bar at accuracy 1
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set_xlabel("top-1 probability")
    ax.set_ylabel("accuracy vs consensus")
    ax.set_title(title)
    return save_figure(fig, path)


def write_dvc_plot_rows(gold: pd.DataFrame, pred: pd.DataFrame, system: str,
                        path: Path | str, labels: list[str] | None = None) -> Path:
    """actual,predicted rows of the consensus clips for DVC's confusion template (x: actual,
    y: predicted); one file per system, DVC tells the files apart by path. A prediction
    outside `labels` (default: every gold label) is written as 'none'."""
    if labels is None:
        labels = sorted({lab for lab in gold["label"] if isinstance(lab, str) and lab})
    actual, predicted, _ = _consensus_pairs(gold, pred, labels)
    if not actual:
        raise ValueError(f"{system}: no clip has a consensus label, nothing to plot")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"actual": actual, "predicted": predicted}).to_csv(path, index=False)
    return path


# ---------------------------------------------------------------- HTML

CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#1f2328;
margin:0 auto;max-width:1200px;padding:1.5rem 2rem;background:#fff}
h1{font-size:1.6rem;margin:.2rem 0 .8rem}h2{font-size:1.2rem;margin-top:2rem;
border-bottom:1px solid #d0d7de;padding-bottom:.3rem}h3{font-size:1rem;margin:1.2rem 0 .4rem}
.wrap{overflow:auto;max-height:75vh;border:1px solid #d0d7de;border-radius:6px}
table{border-collapse:collapse;font-size:13px;width:100%}
th,td{padding:.35rem .6rem;border-bottom:1px solid #eaeef2;white-space:nowrap}
thead th{position:sticky;top:0;background:#f6f8fa;z-index:1;text-align:left;
border-bottom:2px solid #d0d7de}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
tbody tr:nth-child(even){background:#fbfcfd}tbody tr:hover{background:#eef4fb}
td.best{font-weight:700}.note{color:#57606a;font-size:12px}
dl.meta{display:grid;grid-template-columns:max-content 1fr;gap:.2rem 1rem}
dl.meta dt{font-weight:600}dl.meta dd{margin:0}
.figs{display:flex;flex-wrap:wrap;gap:1.2rem}
figure{margin:0;border:1px solid #d0d7de;border-radius:6px;padding:.5rem;background:#fff}
figure img{max-width:520px;height:auto;display:block}
figcaption{text-align:center;font-size:12px;color:#57606a;margin-top:.3rem}
"""
META_ORDER = ("corpus", "split", "n", "labels", "date")
_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
         ".svg": "image/svg+xml", ".gif": "image/gif"}


def _esc(value) -> str:
    return html.escape(str(value), quote=True)


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _fmt(value, column: str = "", ci=None) -> str:
    """0.512, or 0.512 [0.47, 0.55] with an interval; counts as integers; NaN as a dash."""
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(map(_is_number, value)):
        return f"[{_fmt(value[0])}, {_fmt(value[1])}]"
    if not _is_number(value):
        return "" if value is None else str(value)
    if not math.isfinite(float(value)):
        return "\u2013"
    if column in COUNT_COLUMNS or isinstance(value, (int, np.integer)):
        return f"{int(value)}"
    text = f"{float(value):.3f}"
    if ci is not None and len(ci) == 2 and all(math.isfinite(float(v)) for v in ci):
        text += f" [{float(ci[0]):.2f}, {float(ci[1]):.2f}]"
    return text


def _best(values: pd.Series, column: str):
    """The best value of a metric column, or None when the column has no best."""
    numbers = pd.to_numeric(values, errors="coerce")
    if column in NO_BEST or numbers.notna().sum() < 2:
        return None
    return numbers.min() if column in LOWER_IS_BETTER else numbers.max()


def _cls(classes: list[str]) -> str:
    return f' class="{" ".join(classes)}"' if classes else ""


def _header(column: str) -> str:
    arrow = " \u2193" if column in LOWER_IS_BETTER else ""
    return _esc(column) + arrow


def _table(df: pd.DataFrame, cis: dict | None = None, bold: bool = False,
           index_name: str | None = None) -> str:
    """An HTML table; numbers right-aligned; with `bold` the best value per column."""
    df = df.reset_index() if index_name else df
    numeric = {c: pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])
               for c in df.columns}
    best = {c: _best(df[c], c) for c in df.columns if numeric[c]} if bold else {}
    head = "".join(f'<th{_cls(["num"] if numeric[c] else [])}>{_header(str(c))}</th>'
                   for c in df.columns)
    body = []
    key = df.columns[0]
    for _, row in df.iterrows():
        cells = []
        for c in df.columns:
            value = row[c]
            ci = (cis or {}).get(str(row[key]), {}).get(c) if cis else None
            classes = []
            if numeric[c]:
                classes.append("num")
                if best.get(c) is not None and _is_number(value) and value == best[c]:
                    classes.append("best")
            cells.append(f"<td{_cls(classes)}>{_esc(_fmt(value, str(c), ci))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<div class="wrap"><table><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


def _data_uri(path: Path | str) -> str:
    path = Path(path)
    mime = _MIME.get(path.suffix.lower(), "application/octet-stream")
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def _plain(value) -> str:
    """A nested value as one line: `key value` pairs, a nested mapping in parentheses,
    floats to 4 significant digits, None as "none"."""
    if isinstance(value, dict):
        return ", ".join(f"{k} ({_plain(v)})" if isinstance(v, dict) else f"{k} {_plain(v)}"
                         for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(map(_plain, value))
    if value is None:
        return "none"
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.4g}"
    return str(value)


def _meta(meta: dict) -> str:
    """The run's facts; a mapping (e.g. what each system fitted) as one line per key."""
    keys = [k for k in META_ORDER if k in meta] + [k for k in meta if k not in META_ORDER]
    items = []
    for k in keys:
        value = meta[k]
        if isinstance(value, dict):
            text = "".join(f"<div><b>{_esc(name)}</b> {_esc(_plain(v))}</div>"
                           for name, v in value.items())
        else:
            text = _esc(_plain(value))
        items.append(f"<dt>{_esc(k)}</dt><dd>{text}</dd>")
    return f'<dl class="meta">{"".join(items)}</dl>'


ROUND_COLUMNS = ("wa", "ua", "any_annotator_accuracy", "grounding", "well_formed",
                 "wrong_to_right", "right_to_wrong", "label_changed", "mcnemar_p")


def _rounds_frame(rows: list[dict]) -> tuple[pd.DataFrame, dict]:
    """Self-correction rows (`refinement.score_rounds`) as a table with one row per answer
    ("recheck, round 1") and its intervals, keyed like the systems table's."""
    names = ["first answer" if r["round"] == 0 else f"{r['instruction']}, round {r['round']}"
             for r in rows]
    frame = pd.DataFrame([{"answer": n, **{c: r.get(c) for c in ROUND_COLUMNS}}
                          for n, r in zip(names, rows)])
    return frame, {n: r["ci"] for n, r in zip(names, rows)}


def html_report(table: pd.DataFrame, cis: dict[str, dict[str, list[float]]],
                pvalues: list[dict], per_class: dict[str, pd.DataFrame],
                slices: dict[str, pd.DataFrame], images: dict[str, Path], meta: dict,
                path: Path | str, self_correction: dict[str, list[dict]] | None = None,
                ) -> Path:
    """Write the evaluation report as one self-contained HTML file.

    `table` has a row per system (a `system` column, else the index names the systems) and a
    column per metric; `cis` gives system -> metric -> [lo, hi]; each p-value dict is shown
    as a row of its keys."""
    main = table.copy()
    if "system" not in main.columns:
        main = main.rename_axis("system").reset_index()
    main = main[["system"] + [c for c in main.columns if c != "system"]]
    main["system"] = main["system"].astype(str)
    title = "Evaluation report"
    if meta.get("corpus"):
        title += f": {meta['corpus']}" + (f" ({meta['split']})" if meta.get("split") else "")

    parts = [f"<h1>{_esc(title)}</h1>", _meta(meta),
             "<h2>Systems</h2>",
             ('<p class="note">Each figure: point estimate [bootstrap confidence interval over '
              "clips]. Bold: best per column; \u2193: lower is better.</p>"),
             _table(main, cis=cis, bold=True)]
    if meta.get("votes_per_clip") == 1 and "jsd" in main.columns:
        parts.append('<p class="note">One vote per clip here: jsd is the distance from that '
                     "one label and favours overconfident systems; read it beside ece and "
                     "brier.</p>")
    parts.append("<h2>Paired comparisons</h2>")
    if pvalues:
        frame = pd.DataFrame(pvalues)
        parts += [('<p class="note">diff = a \u2212 b on the same resampled clips; p: paired '
                   "bootstrap, two-sided.</p>"), _table(frame)]
    else:
        parts.append('<p class="note">none</p>')
    if self_correction:
        parts += ["<h2>Self-correction rounds</h2>",
                  ('<p class="note">Round 0 is the first answer; each instruction then revises '
                   "it K times. Flips are against round 0 on the consensus clips (w\u2192r: "
                   "wrong to right); p: exact McNemar test of the two flip counts. The control "
                   "follow-up asks for nothing: a correction helps only if it beats the "
                   "control.</p>")]
        for system, rows in self_correction.items():
            frame, cis = _rounds_frame(rows)
            parts += [f"<h3>{_esc(system)}</h3>", _table(frame, cis=cis)]
    for heading, frames in (("Per class (consensus clips)", per_class),
                            ("Per slice", slices)):
        parts.append(f"<h2>{_esc(heading)}</h2>")
        for system, frame in frames.items():
            parts += [f"<h3>{_esc(system)}</h3>", _table(frame)]
    parts.append("<h2>Pictures</h2>")
    figures = [f'<figure><img src="{_data_uri(p)}" alt="{_esc(name)}">'
               f"<figcaption>{_esc(name)}</figcaption></figure>" for name, p in images.items()]
    parts.append(f'<div class="figs">{"".join(figures)}</div>' if figures
                 else '<p class="note">none</p>')

    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_esc(title)}</title><style>{CSS}</style></head><body>\n"
            + "\n".join(parts) + "\n</body></html>\n")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path
