"""Label temperature scaling: the fit recovers a known temperature, and the temperature the
SFT and RL stages save is the one the served probabilities of the dev clips call for."""
import json

import numpy as np
import pytest

from components.config import params_from_dict
from components.speechlm.calibration import BOUNDS, fit_temperature, label_nll


def sampled(temperature: float, n: int = 4000, labels: int = 6, seed: int = 0):
    """(log-probabilities of a model, gold labels drawn from its scores at `temperature`)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 3.0, size=(n, labels))
    log_probs = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    truth = np.exp(logits / temperature)
    truth /= truth.sum(1, keepdims=True)
    gold = np.array([rng.choice(labels, p=p) for p in truth])
    return log_probs, gold


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.5])
def test_the_fit_recovers_the_temperature_the_labels_were_drawn_at(temperature):
    log_probs, gold = sampled(temperature)
    found = fit_temperature(log_probs, gold)
    assert found == pytest.approx(temperature, rel=0.08)
    best = label_nll(log_probs, gold, found)
    assert best <= min(label_nll(log_probs, gold, found * f) for f in (0.9, 1.1))


def test_the_nll_is_the_softmax_over_the_label_set():
    log_probs = np.log(np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]]))
    assert label_nll(log_probs, np.array([0, 1]), 1.0) == pytest.approx(
        -(np.log(0.7) + np.log(0.1)) / 2)
    flat = np.exp(log_probs / 2) / np.exp(log_probs / 2).sum(1, keepdims=True)
    assert label_nll(log_probs, np.array([0, 1]), 2.0) == pytest.approx(
        -(np.log(flat[0, 0]) + np.log(flat[1, 1])) / 2)


def test_a_model_always_right_is_sharpened_to_the_bound_and_bad_input_is_refused():
    log_probs = np.log(np.array([[0.6, 0.4], [0.3, 0.7]] * 20))
    assert fit_temperature(log_probs, np.array([0, 1] * 20)) == pytest.approx(BOUNDS[0], rel=0.01)
    with pytest.raises(ValueError, match="N gold labels"):
        fit_temperature(log_probs, np.array([0, 1]))
    with pytest.raises(ValueError, match="N gold labels"):
        fit_temperature(np.zeros((0, 2)), np.array([], dtype=int))


def test_rl_cannot_calibrate_on_the_clips_it_trains_on():
    with pytest.raises(ValueError, match="rl.calibrate fits the label temperature on the dev"):
        params_from_dict({"rl": {"splits": ["train", "dev"]}})
    params = params_from_dict({"rl": {"splits": ["dev"], "calibrate": False}})
    assert params.rl.splits == ["dev"] and not params.rl.calibrate


SHARPER = 30.0
"""The tiny LM's label probabilities are nearly uniform: its logits are multiplied by this in
the alignment tests, so that a clip scored with the wrong prompt or audio shows."""


def sharpened(folder):
    """(the model of `folder` with its logits multiplied by SHARPER, its tokenizer, its task
    without a label temperature)."""
    from components.speechlm.io import load_speechlm

    model, tokenizer = load_speechlm(folder)
    model.lm_head.register_forward_hook(lambda module, args, out: out * SHARPER)
    task = json.loads((folder / "task.json").read_text())
    task.pop("label_temperature", None)
    return model.eval(), tokenizer, task


@pytest.fixture
def scored(monkeypatch) -> dict:
    """utt_id -> the label log-probabilities the calibration scored for it."""
    import components.speechlm.calibration as calibration

    found: dict = {}
    score = calibration.label_log_probs

    def spy(model, tokenizer, rows, *args, **kwargs):
        out = score(model, tokenizer, rows, *args, **kwargs)
        found.update({row["utt_id"]: values for row, values in zip(rows, out)})
        return out

    monkeypatch.setattr(calibration, "label_log_probs", spy)
    return found


def assert_served_alike(scored: dict, fitted: dict, model, tokenizer, task, folder, root):
    """The calibration scored every labelled dev clip as the serving predictor does (its
    label probabilities), and fitted the temperature those probabilities call for."""
    from components.evaluate.stage import evaluation_rows
    from components.serve.predictor import Predictor, clips_from_features, frames_of

    predictor = Predictor(model, tokenizer, task, folder)
    _, dev, _ = evaluation_rows(root / "features" / "features.parquet",
                                root / "manifest.parquet", "dev")
    dev = dev[dev["label"].isin(predictor.labels)]
    frames = frames_of(root / "features" / "frames", dev["utt_id"].tolist())
    results = predictor.predict_clips(clips_from_features(dev, frames, predictor),
                                      rationale=False, batch_size=3)
    served = np.array([[r["probabilities"][x] for x in predictor.labels] for r in results])
    assert sorted(scored) == sorted(dev["utt_id"]) and fitted["calibration_clips"] == len(dev)
    ours = np.array([scored[u] for u in dev["utt_id"]])
    ours = np.exp(ours - ours.max(1, keepdims=True))
    np.testing.assert_allclose(ours / ours.sum(1, keepdims=True), served, atol=2e-5)
    assert served.max(1).mean() > 0.5  # sharp enough for a misaligned clip to show
    gold = np.array([predictor.labels.index(g) for g in dev["label"]])
    assert fitted["label_temperature"] == pytest.approx(
        fit_temperature(np.log(served), gold), rel=1e-3)


@pytest.mark.slow
def test_the_sft_stages_dev_scores_are_the_served_probabilities(pipeline, trained, scored):
    """The SFT stage scores the dev clips with its training collator's prompts and audio."""
    import pandas as pd

    from components.speechlm.collate import AudioSource, SpeechCollator
    from components.speechlm.train import calibrated_on_dev, sft_examples
    from tests.sft_fixture import sft_params

    root, *_, tiny = pipeline
    cfg = sft_params(root, tiny).sft
    model, tokenizer, task = sharpened(trained)
    _, dev, manifest, label_set, data_root = sft_examples(cfg, 0)
    source = AudioSource.from_features(model, cfg.frames, manifest, data_root,
                                       {e["utt_id"] for e in dev}, pd.read_parquet(cfg.features))
    fitted = calibrated_on_dev(model, SpeechCollator(tokenizer, source, label_set), dev)
    assert_served_alike(scored, fitted, model, tokenizer, task, trained, root)


@pytest.mark.slow
def test_the_rl_stages_dev_scores_are_the_served_probabilities(pipeline, trained, tmp_path,
                                                                scored):
    import torch

    from components.rl.worker import calibrated_on_dev
    from tests.rl_fixture import tiny_rl_params

    params = tiny_rl_params(pipeline[0], trained, tmp_path)
    model, tokenizer, task = sharpened(trained)
    fitted = calibrated_on_dev(model, tokenizer, params, torch.device("cpu"))
    assert_served_alike(scored, fitted, model, tokenizer, task, trained, pipeline[0])


@pytest.mark.slow
def test_the_sft_stage_saves_its_temperature_with_the_model(trained):
    task = json.loads((trained / "task.json").read_text())
    report = json.loads((trained / "eval.json").read_text())
    assert report["label_temperature"] == pytest.approx(task["label_temperature"], rel=1e-5)
    assert report["calibration_clips"] > 0
    assert report["calibration_nll_after"] <= report["calibration_nll_before"]
