"""One saved model on a corpus it was not trained on: loader, gate and features run first,
clips of labels the model does not know are counted out, the metrics file has its contract."""
import json

import pandas as pd
import pytest

from components.cli import main
from tests.corpus_fixtures import write_emodb_fixture

pytestmark = pytest.mark.slow


def test_a_demo_model_on_emodb_counts_unknown_labels_out(trained, tmp_path, monkeypatch):
    data = write_emodb_fixture(tmp_path / "emodb")
    monkeypatch.chdir(tmp_path)  # the default params.yaml is not needed: defaults apply
    out = tmp_path / "cross"
    status = main(["--params", str(tmp_path / "none.yaml"), "evaluate", "--model", str(trained),
                   "--corpus", "emodb", "--data-dir", str(data), "--split", "all",
                   "--out", str(out), "--no-rationale"])
    assert status == 0
    metrics = json.loads((out / "metrics.json").read_text())
    model_labels = json.loads((trained / "task.json").read_text())["labels"]
    assert metrics["corpus"] == "emodb" and metrics["labels"] == model_labels
    manifest = pd.read_parquet(out / "gated" / "manifest.parquet")
    unknown = manifest["label"].ne("") & ~manifest["label"].isin(model_labels)
    entry = metrics["systems"]["model"]
    assert entry["out_of_set"] == int(unknown.sum()) > 0  # boredom and disgust
    assert entry["n"] == len(manifest) - int(unknown.sum())
    for key in ("wa", "ua", "macro_f1", "any_annotator_accuracy", "annotator_aware_macro_f1"):
        assert key in entry and entry["ci"][key][0] <= entry[key] <= entry["ci"][key][1]
    assert set(metrics["shared_labels"]) == set(model_labels) & set(metrics["corpus_labels"])
    shared = metrics["shared_labels"]
    assert metrics["label_set"] == "shared" and metrics["answers"] == shared
    assert set(shared) < set(model_labels)  # the demo model knows "surprised", EmoDB does not
    predictions = pd.read_parquet(out / "predictions" / "model.parquet")
    assert set(predictions["label"]) <= set(shared)
    restricted = [json.loads(p) for p in predictions["probabilities"]]
    for probs in restricted:
        assert all(probs[x] == 0.0 for x in set(model_labels) - set(shared))
    open_set = pd.read_parquet(out / "predictions" / "model_open_set.parquet")
    assert set(open_set["label"]) <= set(model_labels)
    assert metrics["systems"]["model_open_set"]["n"] == entry["n"]
    for probs, free in zip(restricted, map(json.loads, open_set["probabilities"])):
        assert max(probs, key=probs.get) == max(shared, key=free.get)


def test_the_label_set_is_checked(trained, tmp_path):
    from components.config import Params
    from components.evaluate.any_corpus import evaluate_model_on_corpus

    with pytest.raises(ValueError, match="label set must be one of"):
        evaluate_model_on_corpus(Params(), str(trained), "emodb", None, "all", tmp_path, "open")


def test_the_model_option_needs_corpus_and_out(trained, capsys):
    assert main(["evaluate", "--model", str(trained)]) == 1
    assert "--model, --corpus and --out go together" in capsys.readouterr().err
