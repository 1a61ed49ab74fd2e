"""The concept-shift probe: the identity it rests on (output embedding times the final hidden
state is the logits), padding-free hidden states, and the statistics it reports."""
import json

import numpy as np
import pytest
import torch

from components.probe.shift import (
    contrasts,
    emotion_scores,
    emotion_token_ids,
    last_hidden,
    logit_shift,
    paired_test,
    random_z,
)
from components.serve.predictor import left_pad, padded_positions


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny random Llama with its own (untied) output embedding; `model.model` is the
    backbone, as in the SpeechLM (whose own case the slow test below covers)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tests.tiny_models import save_tiny_lm

    folder = save_tiny_lm(tmp_path_factory.mktemp("probe") / "lm", tie=False)
    return AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)


def _rows(tokenizer):
    return [tokenizer("How does the speaker sound today?")["input_ids"],
            tokenizer("Angry.")["input_ids"]]


@torch.no_grad()
def test_output_embedding_times_final_hidden_state_is_the_logits(tiny):
    model, tokenizer = tiny
    rows = _rows(tokenizer)
    hidden = last_hidden(model, rows, {}, tokenizer.pad_token_id)
    ids, mask = left_pad(rows, tokenizer.pad_token_id, model.device)
    logits = model(input_ids=ids, attention_mask=mask,
                   position_ids=padded_positions(mask)).logits[:, -1]
    weight = model.get_output_embeddings().weight
    torch.testing.assert_close(hidden @ weight.T, logits, atol=1e-5, rtol=1e-5)
    # so a hidden-state shift read through W is exactly the change of the logits
    shift = logit_shift(model, hidden[1:] - hidden[:1])
    np.testing.assert_allclose(shift[0], (logits[1] - logits[0]).numpy(), atol=1e-4)


@torch.no_grad()
def test_padding_does_not_change_the_hidden_state(tiny):
    model, tokenizer = tiny
    rows = _rows(tokenizer)
    together = last_hidden(model, rows, {}, tokenizer.pad_token_id)
    alone = last_hidden(model, rows[1:], {}, tokenizer.pad_token_id)  # no padding at all
    assert len(rows[1]) < len(rows[0])  # so in the batch it was padded
    torch.testing.assert_close(together[1:], alone, atol=1e-5, rtol=1e-4)


def test_emotion_tokens_start_the_emotion_words_and_are_not_shared(tiny):
    _, tokenizer = tiny
    sets = emotion_token_ids(tokenizer, ["angry", "happy", "sad", "neutral"])
    assert all(sets[e] for e in sets)
    starts = {e: {tokenizer.decode([i]).strip().lower() for i in ids} for e, ids in sets.items()}
    assert any("ang" in s for s in starts["angry"]) and any("sad" in s for s in starts["sad"])
    flat = [i for ids in sets.values() for i in ids]
    assert len(flat) == len(set(flat))


def test_contrasts_and_z_scores_single_out_the_moved_emotion():
    rng = np.random.default_rng(0)
    delta = rng.normal(0, 1, size=(5, 1000))
    sets = {"angry": [1, 2, 3], "sad": [4, 5, 6], "happy": [7, 8, 9]}
    delta[:, sets["angry"]] += 6.0
    scores = emotion_scores(delta, sets)
    np.testing.assert_allclose(scores["sad"], delta[:, [4, 5, 6]].mean(axis=1))
    contrast = contrasts(scores)
    np.testing.assert_allclose(contrast["angry"],
                               scores["angry"] - (scores["sad"] + scores["happy"]) / 2)
    z = random_z(delta.mean(axis=0), sets, np.arange(10, 1000), n_random=500, seed=1)
    assert z["angry"] > 8 and abs(z["sad"]) < 3 and abs(z["happy"]) < 3


def test_the_paired_test_reads_the_direction_of_the_differences():
    a, b = np.array([1.0, 2.0, 0.5, 1.5, 3.0, 0.2]), np.zeros(6)
    result = paired_test(a, b, seed=0)
    assert result["mean"] == pytest.approx(a.mean()) and result["share_positive"] == 1.0
    assert result["ci"][0] > 0 and result["wilcoxon_p"] < 0.05 and result["n"] == 6
    flipped = paired_test(b, a, seed=0)
    assert flipped["mean"] == pytest.approx(-a.mean()) and flipped["share_positive"] == 0.0
    assert paired_test(a, a)["wilcoxon_p"] == 1.0


@pytest.mark.slow
def test_the_probe_on_a_trained_model_writes_its_figures(trained, pipeline, tmp_path):
    import mlflow

    from components.config import Params
    from components.probe.stage import run_probe

    root, df, feats, _, labels, _ = pipeline
    params = Params()
    params.tracking.experiment = "test-probe"
    cfg = params.probe
    cfg.model, cfg.features = str(trained), str(root / "features" / "features.parquet")
    cfg.manifest, cfg.max_clips, cfg.n_random, cfg.max_new_tokens = \
        str(root / "manifest.parquet"), 5, 50, 6
    cfg.target = labels[0]
    result = run_probe(params, tmp_path)
    saved = json.loads((tmp_path / "probe.json").read_text())
    assert saved["n_clips"] == 5 and saved["labels"] == labels
    assert saved["identity_max_abs_error"] < 1e-3
    assert set(saved["instructions"]) == {"recheck", "evidence", "calmer", "angrier"}
    for entry in saved["instructions"].values():
        assert set(entry["z"]) == set(labels) and len(entry["top_tokens"]["up"]) == cfg.top_k
        assert entry["shift_norm"] > 0  # the instruction changed the state
        # contrasts over emotions sum to zero (each is its score minus the others' mean)
        assert sum(entry["contrast"].values()) == pytest.approx(0, abs=1e-6)
    pair = saved["pair"]
    assert (pair["a"], pair["b"], pair["target"]) == ("angrier", "calmer", labels[0])
    assert len(pair["per_clip_contrast_diff"]) == 5
    assert pair["contrast"]["mean"] == pytest.approx(np.mean(pair["per_clip_contrast_diff"]))
    assert (tmp_path / "probe.png").stat().st_size > 10_000
    assert result["pair"] == saved["pair"]
    runs = mlflow.search_runs(experiment_names=["test-probe"])
    assert (runs["tags.stage"] == "probe").sum() == 1
    assert "metrics.pair/wilcoxon_p" in runs.columns
