"""The evidence token: the classifiers' probabilities reach the LM as a mix of the label words'
embeddings, the folded logistic regression equals scikit-learn's, and the token is saved,
frozen and counted in the placeholders; the level evidence tokens likewise over the level
words, their regressions fitted on the measured levels; tiny random models, CPU, offline."""
import numpy as np
import pandas as pd
import pytest
import torch
from safetensors import safe_open

from components.classical import fit_balanced_lr
from components.config import SFTConfig
from components.speechlm import io as speechlm_io
from components.speechlm.encoders import collate_frames
from components.speechlm.evidence import (
    ABSENT_LOGIT,
    set_label_embeddings,
    set_prosody_classifier,
)
from components.speechlm.evidence_fit import prepare_level_evidence
from components.speechlm import train
from components.speechlm.io import build_speechlm, load_speechlm, save_speechlm
from components.speechlm.sft_data import SPEAKER_NORM
from tests.tiny_models import TINY_SPEECHLM, save_tiny_lm

TINY_NAME = "bundled:tiny-test-lm"
LABELS = ["neutral", "happy", "sad", "angry"]


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    return save_tiny_lm(tmp_path_factory.mktemp("tiny_lm"))


@pytest.fixture
def model_and_tokenizer(tiny_lm, monkeypatch):
    monkeypatch.setattr(speechlm_io, "resolve_model", lambda name: str(tiny_lm) if name == TINY_NAME else name)
    torch.manual_seed(3)
    model, tokenizer = build_speechlm(TINY_NAME, prosody_dim=6, evidence_classes=len(LABELS),
                                      **TINY_SPEECHLM)
    set_label_embeddings(model.model.evidence, model.get_input_embeddings(), tokenizer, LABELS)
    return model, tokenizer


def _classes(n_per_class: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """Six-dimensional vectors whose class shifts one dimension: separable, not perfectly."""
    rng = np.random.default_rng(seed)
    x, y = [], []
    for i, label in enumerate(LABELS[:3]):  # "angry" never occurs in train
        v = rng.normal(size=(n_per_class, 6)) * 2 + 5
        v[:, i] += 3
        x.append(v)
        y += [label] * n_per_class
    return np.concatenate(x), y


def test_folded_logistic_regression_gives_sklearns_probabilities(model_and_tokenizer):
    model, _ = model_and_tokenizer
    x, y = _classes(40, 0)
    xd, yd = _classes(10, 1)
    pipeline, c, scores = fit_balanced_lr(x, y, xd, yd, [0.01, 1.0], seed=0)
    assert c in scores and scores[c] == max(scores.values())
    evidence = model.model.evidence
    set_prosody_classifier(evidence, pipeline, LABELS)
    with torch.no_grad():
        ours = evidence.prosody_classifier(torch.as_tensor(xd, dtype=torch.float32)).softmax(-1).numpy()
    theirs = pipeline.predict_proba(xd)
    for j, name in enumerate(pipeline.classes_):
        np.testing.assert_allclose(ours[:, LABELS.index(name)], theirs[:, j], atol=1e-4)
    assert float(evidence.prosody_classifier.bias[LABELS.index("angry")]) == ABSENT_LOGIT
    assert ours[:, LABELS.index("angry")].max() < 1e-6


def test_the_token_is_the_probability_weighted_label_embedding(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    evidence = model.model.evidence
    ids = tokenizer(" sad", add_special_tokens=False)["input_ids"]
    torch.testing.assert_close(evidence.label_embeddings[2],
                               model.get_input_embeddings().weight[ids].mean(0))
    with torch.no_grad():  # both classifiers sure of "sad": the token is sad's embedding
        for layer in (evidence.head, evidence.prosody_classifier):
            layer.weight.zero_()
            layer.bias.copy_(torch.tensor([0.0, 0.0, 40.0, 0.0]))
    model.eval()
    values, mask = collate_frames([torch.randn(120, 83), torch.randn(80, 83)])
    with torch.no_grad():
        soft, soft_mask = model.model.encode_audio(values, mask, torch.randn(2, 6))
    torch.testing.assert_close(soft[:, 0], evidence.label_embeddings[[2, 2]], atol=1e-5, rtol=1e-4)
    assert soft_mask[:, :2].all()
    assert [int(n) for n in soft_mask.sum(1)] == [model.n_audio_tokens(120), model.n_audio_tokens(80)]


def test_evidence_is_frozen_counted_saved_and_loaded(model_and_tokenizer, tiny_lm, tmp_path):
    model, tokenizer = model_and_tokenizer
    plain, _ = build_speechlm(TINY_NAME, prosody_dim=6, **TINY_SPEECHLM)
    assert model.n_audio_tokens(120) == plain.n_audio_tokens(120) + 1
    model.set_trainable()
    assert not any(p.requires_grad for p in model.model.evidence.parameters())
    assert model.model.prosody_projector[0].weight.requires_grad
    folder = save_speechlm(model, tokenizer, tmp_path / "m")
    with safe_open(str(folder / "audio.safetensors"), framework="pt") as f:
        assert "evidence.label_embeddings" in f.keys() and "evidence.head.weight" in f.keys()
    loaded, _ = load_speechlm(folder)
    values, mask = collate_frames([torch.randn(100, 83)])
    prosody = torch.randn(1, 6)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model.encode_audio(values, mask, prosody)[0],
                                   model.eval().model.encode_audio(values, mask, prosody)[0])


def test_a_sharpened_token_weighs_the_label_words_by_normalised_powers(model_and_tokenizer, tmp_path):
    model, tokenizer = model_and_tokenizer
    evidence = model.model.evidence
    with torch.no_grad():  # both classifiers give 0.4 / 0.3 / 0.2 / 0.1
        for layer in (evidence.head, evidence.prosody_classifier):
            layer.weight.zero_()
            layer.bias.copy_(torch.tensor([0.4, 0.3, 0.2, 0.1]).log())
    values, mask = collate_frames([torch.randn(100, 83)])
    prosody = torch.randn(1, 6)
    model.eval()
    for power in (1.0, 3.0):
        model.set_evidence_power(power)
        weights = torch.tensor([0.4, 0.3, 0.2, 0.1]) ** power
        with torch.no_grad():
            token = model.model.encode_audio(values, mask, prosody)[0][0, 0]
        torch.testing.assert_close(token, (weights / weights.sum()) @ evidence.label_embeddings,
                                   atol=1e-5, rtol=1e-4)
    assert model.config.evidence_power == 3.0
    loaded, _ = load_speechlm(save_speechlm(model, tokenizer, tmp_path / "m"))
    assert loaded.config.evidence_power == 3.0 and loaded.model.evidence.power == 3.0
    with torch.no_grad():
        torch.testing.assert_close(loaded.model.encode_audio(values, mask, prosody)[0][0, 0], token)
    with pytest.raises(ValueError, match="> 0"):
        model.set_evidence_power(0.0)
    plain, _ = build_speechlm(TINY_NAME, prosody_dim=6, **TINY_SPEECHLM)
    with pytest.raises(ValueError, match="no evidence token"):
        plain.set_evidence_power(2.0)


def test_the_dev_labels_choose_the_power_and_the_model_keeps_it(model_and_tokenizer, monkeypatch):
    """Power 3 and 5 label every dev clip right, 1 half of them: 3 is kept (the smaller)."""
    model, _ = model_and_tokenizer
    dev = [{"utt_id": str(i), "task": "ser", "label": LABELS[i % 4]} for i in range(8)]
    seen = []

    def fake_generate(model, collator, examples, max_new_tokens):
        power = model.model.evidence.power
        seen.append((power, max_new_tokens, {e["prosody_norm"] for e in examples}))
        right = power >= 3.0
        return [f"Emotion: {e['label'] if right or i % 2 else 'neutral'}\nRationale: x"
                for i, e in enumerate(examples)]

    monkeypatch.setattr(train, "generate", fake_generate)
    cfg = SFTConfig(evidence_power_grid=[5.0, 1.0, 3.0])
    chosen = train.choose_evidence_power(model, None, dev, LABELS, cfg)
    assert chosen["evidence_power"] == 3.0
    assert chosen["evidence_power_dev_ua"][5.0] == chosen["evidence_power_dev_ua"][3.0] == 1.0
    assert chosen["evidence_power_dev_ua"][1.0] < 1.0
    assert "evidence_power_minutes" in chosen  # the cost, logged beside the choice
    assert [p for p, _, _ in seen] == [1.0, 3.0, 5.0]
    assert all(tokens == train.LABEL_FIRST_TOKENS and norm == {SPEAKER_NORM}
               for _, tokens, norm in seen)
    assert model.config.evidence_power == model.model.evidence.power == 3.0


def test_evidence_tokens_need_the_warm_up_and_the_perception_tasks():
    with pytest.raises(ValueError, match="encoder_pretrain_epochs"):
        SFTConfig(evidence_token=True, level_evidence=False, encoder_pretrain_epochs=0)
    with pytest.raises(ValueError, match="level_evidence"):
        SFTConfig(evidence_token=False, level_evidence=True, encoder_pretrain_epochs=0)
    with pytest.raises(ValueError, match="perception_ratio"):
        SFTConfig(level_evidence=True, perception_ratio=0.0)
    with pytest.raises(ValueError, match="evidence_power_grid"):
        SFTConfig(evidence_power_grid=[])
    with pytest.raises(ValueError, match="evidence_power_grid"):
        SFTConfig(evidence_power_grid=[1.0, -2.0])
    with pytest.raises(ValueError, match="freeze_warmed_encoder"):
        SFTConfig(evidence_token=False, level_evidence=False, encoder_pretrain_epochs=0)
    SFTConfig(evidence_token=False, level_evidence=False, encoder_pretrain_epochs=0,
              perception_ratio=0.0, evidence_power_grid=[1.0], freeze_warmed_encoder=False)


def test_adding_evidence_tokens_leaves_every_other_weight_and_the_random_stream(tiny_lm, monkeypatch):
    """An ablation of the tokens must not also be a new seed for the LoRA and the projectors."""
    monkeypatch.setattr(speechlm_io, "resolve_model", lambda name: str(tiny_lm) if name == TINY_NAME else name)
    built = []
    for tokens in ({}, {"evidence_classes": len(LABELS), "level_evidence": {"pitch": 3, "rate": 3}}):
        torch.manual_seed(5)
        model, _ = build_speechlm(TINY_NAME, prosody_dim=6, **tokens, **TINY_SPEECHLM)
        built.append((model.state_dict(), torch.randn(3)))
    (plain, plain_next), (with_tokens, tokens_next) = built
    assert any(k.startswith("model.level_evidence.") for k in with_tokens)
    assert set(plain) < set(with_tokens)
    for name, value in plain.items():
        torch.testing.assert_close(with_tokens[name], value, msg=name)
    torch.testing.assert_close(tokens_next, plain_next)


def test_level_tokens_come_after_the_evidence_token_and_are_saved(tiny_lm, tmp_path, monkeypatch):
    monkeypatch.setattr(speechlm_io, "resolve_model", lambda name: str(tiny_lm) if name == TINY_NAME else name)
    torch.manual_seed(4)
    model, tokenizer = build_speechlm(TINY_NAME, prosody_dim=6, evidence_classes=len(LABELS),
                                      level_evidence={"pitch": 3, "rate": 3}, **TINY_SPEECHLM)
    plain, _ = build_speechlm(TINY_NAME, prosody_dim=6, evidence_classes=len(LABELS), **TINY_SPEECHLM)
    assert model.n_audio_tokens(120) == plain.n_audio_tokens(120) + 2
    tokens = model.model.level_evidence
    set_label_embeddings(tokens["pitch"], model.get_input_embeddings(), tokenizer, ["low", "normal", "high"])
    set_label_embeddings(tokens["rate"], model.get_input_embeddings(), tokenizer, ["slow", "normal", "fast"])
    with torch.no_grad():  # pitch sure of "high", rate sure of "slow"
        for task, sure in (("pitch", 2), ("rate", 0)):
            for layer in (tokens[task].head, tokens[task].prosody_classifier):
                layer.weight.zero_()
                layer.bias.fill_(0.0)
                layer.bias[sure] = 40.0
    model.set_trainable()
    assert not any(p.requires_grad for p in tokens.parameters())
    model.eval()
    values, mask = collate_frames([torch.randn(120, 83)])
    prosody = torch.randn(1, 6)
    with torch.no_grad():
        soft, _ = model.model.encode_audio(values, mask, prosody)
        prosody_token = model.model.prosody_projector(prosody)
    high = model.get_input_embeddings().weight[tokenizer(" high", add_special_tokens=False)["input_ids"]].mean(0)
    torch.testing.assert_close(soft[0, 1], high, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(soft[0, 2], tokens["rate"].label_embeddings[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(soft[0, 3], prosody_token[0])
    folder = save_speechlm(model, tokenizer, tmp_path / "m")
    loaded, _ = load_speechlm(folder)
    assert loaded.config.level_evidence == {"pitch": 3, "rate": 3}
    with torch.no_grad():
        torch.testing.assert_close(loaded.model.encode_audio(values, mask, prosody)[0], soft)


def _level_clips(n: int, seed: int, rate: str | None = None) -> pd.DataFrame:
    """Clips whose measured rate follows the first eGeMAPS feature (unless fixed to `rate`)."""
    rng = np.random.default_rng(seed)
    raw = rng.normal(size=(n, 6)) + 5
    measured = np.where(raw[:, 0] < 4.6, "slow", np.where(raw[:, 0] > 5.4, "fast", "normal"))
    return pd.DataFrame({"utt_id": [f"{seed}-{i}" for i in range(n)], "egemaps": list(raw),
                         "egemaps_spknorm": list(raw - 5),
                         "rate_level": [rate or m for m in measured]})


def _ser(features: pd.DataFrame) -> list[dict]:
    return [{"utt_id": u, "label": "neutral", "task": "ser"} for u in features["utt_id"]]


@pytest.mark.parametrize("constant", [False, True])
def test_level_regression_is_fitted_on_the_measured_levels(tiny_lm, monkeypatch, constant):
    monkeypatch.setattr(speechlm_io, "resolve_model", lambda name: str(tiny_lm) if name == TINY_NAME else name)
    model, tokenizer = build_speechlm(TINY_NAME, prosody_dim=6, level_evidence={"rate": 3},
                                      **TINY_SPEECHLM)
    train = _level_clips(90, 0, rate="slow" if constant else None)
    dev = _level_clips(40, 1)
    features = pd.concat([train, dev], ignore_index=True)
    stats = {"mean": np.mean(np.stack(train["egemaps"]), 0).tolist(),
             "std": np.std(np.stack(train["egemaps"]), 0).tolist()}
    logged = prepare_level_evidence(model, tokenizer, features, _ser(train), _ser(dev), stats,
                                    [0.01, 1.0], seed=0)
    token = model.model.level_evidence["rate"]
    ids = tokenizer(" fast", add_special_tokens=False)["input_ids"]
    torch.testing.assert_close(token.label_embeddings[2], model.get_input_embeddings().weight[ids].mean(0))
    with torch.no_grad():
        predicted = token.prosody_classifier(
            torch.as_tensor(np.stack(dev["egemaps_spknorm"]), dtype=torch.float32)).argmax(-1)
    said = [["slow", "normal", "fast"][i] for i in predicted.tolist()]
    if constant:  # one level in train: the regression can only say it
        assert logged == {} and set(said) == {"slow"}
    else:
        assert logged["level_lr_rate_C"] in (0.01, 1.0) and logged["level_lr_rate_dev_accuracy"] >= 0.8
        assert np.mean(np.array(said) == dev["rate_level"].to_numpy()) >= 0.8
