"""The evaluation pictures, DVC plot rows and the self-contained HTML report."""
import base64
import re

import pandas as pd

from components.evaluate.metrics import (
    bootstrap_ci,
    per_class,
    point_metrics,
    reliability,
    slices,
)
from components.evaluate.report import (
    confusion_png,
    html_report,
    reliability_png,
    write_dvc_plot_rows,
)
from tests.test_evaluate_metrics import LABELS, make_gold, make_pred

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path, min_bytes=5000):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > min_bytes


def test_confusion_and_reliability_pngs(tmp_path):
    gold, pred = make_gold(), make_pred()
    assert_png(confusion_png(gold, pred, LABELS, tmp_path / "figs" / "cm.png", "system A"))
    rel = reliability(gold, pred, LABELS)
    assert_png(reliability_png(rel, tmp_path / "rel.png", "system A"))
    empty = reliability(gold, make_pred(with_probs=False), LABELS)
    assert_png(reliability_png(empty, tmp_path / "rel_empty.png", "no probabilities"), 2000)


def test_dvc_plot_rows(tmp_path):
    path = write_dvc_plot_rows(make_gold(), make_pred(), "sft", tmp_path / "sft.csv", LABELS)
    df = pd.read_csv(path, keep_default_na=False)
    assert list(df.columns) == ["actual", "predicted"]
    assert df.values.tolist() == [["neutral", "neutral"], ["happy", "neutral"],
                                  ["angry", "angry"], ["angry", "angry"], ["happy", "none"]]


def build_report(tmp_path, **meta):
    gold = make_gold()
    systems = {"sft": make_pred(), "majority": make_pred().assign(label="angry",
                                                                probabilities=None)}
    rows, cis = [], {}
    for name, pred in systems.items():
        m = point_metrics(gold, pred, LABELS)
        columns = ("n", "wa", "ua", "macro_f1", "ece", "jsd")
        rows.append({"system": name, **{k: m[k] for k in columns}})
        cis[name] = bootstrap_ci(gold, pred, LABELS, n_boot=100)
    table = pd.DataFrame(rows)
    images = {"confusion sft": confusion_png(gold, systems["sft"], LABELS,
                                             tmp_path / "cm.png", "sft")}
    pvalues = [{"a": "sft", "b": "majority", "metric": "ua", "diff": 0.333, "p": 0.04,
                "ci": [0.1, 0.6]}]
    meta = {"corpus": "demo", "split": "test", "n": 7, "labels": LABELS, "date": "2025-01-01",
            **meta}
    path = html_report(table, cis, pvalues,
                       {k: per_class(gold, v, LABELS) for k, v in systems.items()},
                       {k: slices(gold, v, LABELS) for k, v in systems.items()},
                       images, meta, tmp_path / "report" / "index.html")
    return path.read_text(encoding="utf-8"), table, cis


def test_html_report_is_self_contained_and_shows_the_numbers(tmp_path):
    page, table, cis = build_report(tmp_path)
    assert "http://" not in page and "https://" not in page
    assert "<link" not in page and "<script" not in page
    match = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert match and base64.b64decode(match.group(1))[:8] == b"\x89PNG\r\n\x1a\n"
    sft = table.set_index("system").loc["sft"]
    lo, hi = cis["sft"]["wa"]
    assert f"{sft['wa']:.3f} [{lo:.2f}, {hi:.2f}]" in page           # 0.600 [lo, hi]
    assert ">7</td>" in page                                          # n as a count
    for heading in ("Paired comparisons", "Per class", "Per slice", "Pictures"):
        assert heading in page
    for value in ("demo", "test", "neutral, happy, angry", "2025-01-01", "no_agreement"):
        assert value in page
    assert "position:sticky" in page


def test_html_report_bolds_the_best_value_per_column(tmp_path):
    page, _, _ = build_report(tmp_path)
    # sft wa 0.600 beats majority 0.400; ece: only sft has one, so nothing to compare
    best = re.findall(r'<td class="num best">([^<]*)</td>', page.split("<h2>Paired")[0])
    assert any(cell.startswith("0.600 [") for cell in best)
    assert not any(cell.startswith("0.400") for cell in best)
    assert not any(cell.startswith("7") for cell in best)            # counts are never best


def test_html_report_warns_about_jsd_only_where_each_clip_has_one_vote(tmp_path):
    warning = "jsd is the distance from that one label"
    assert warning not in build_report(tmp_path, votes_per_clip=22 / 7)[0]
    assert warning in build_report(tmp_path, votes_per_clip=1.0)[0]


def test_html_report_shows_what_each_system_fitted_a_line_each(tmp_path):
    fitted = {"egemaps_lr_speaker": {"C": 0.1, "dev_ua": {"0.1": 0.64031, "1.0": 0.5528}},
              "zeroshot": {"folder": "models/zeroshot", "label_temperature": None},
              "sft": {"folder": "models/sft", "label_temperature": 2.38242}}
    page = build_report(tmp_path, fitted=fitted)[0]
    assert ("<div><b>egemaps_lr_speaker</b> C 0.1, dev_ua (0.1 0.6403, 1.0 0.5528)</div>"
            in page)
    assert "<div><b>zeroshot</b> folder models/zeroshot, label_temperature none</div>" in page
    assert "<div><b>sft</b> folder models/sft, label_temperature 2.382</div>" in page
    assert "{" not in page.split("<dl")[1].split("</dl>")[0]  # no Python dict left in it
