"""Encoder warm-up as an emotion classifier: it learns a separable toy task, moves only the
encoder, and refuses labels outside the label set."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from components.speechlm.config import SpeechLMConfig
from components.speechlm.encoders import FramesEncoder, collate_frames
from components.speechlm.evidence import EvidenceToken
from components.speechlm.pretrain import pretrain_encoder

LABELS = ["neutral", "angry", "sad"]


def toy_clips(n_per_label: int, seed: int):
    """Frame features whose energy and F0 columns depend on the label, lengths varying."""
    rng = np.random.default_rng(seed)
    frames, clips = {}, []
    for i, label in enumerate(LABELS):
        for j in range(n_per_label):
            x = rng.normal(size=(int(rng.integers(40, 90)), 83)).astype(np.float32)
            x[:, 80:] += 2.0 * i
            utt = f"{label}-{seed}-{j}"
            frames[utt] = x
            clips.append((utt, label))
    return frames, clips


def tiny_model(evidence: bool = False, level_tasks: tuple[str, ...] = ()):
    torch.manual_seed(0)
    config = SpeechLMConfig(text_config={"model_type": "llama"}, encoder_dim=32, encoder_heads=2,
                            encoder_layers=1, encoder_dropout=0.0)
    return SimpleNamespace(model=SimpleNamespace(
        audio_encoder=FramesEncoder(config), prosody_projector=None, config=config,
        evidence=EvidenceToken(32, 0, len(LABELS), 8) if evidence else None,
        level_evidence=nn.ModuleDict({t: EvidenceToken(32, 0, 3, 8) for t in level_tasks})
        if level_tasks else None))


def batches_of(frames):
    def batch(utt_ids):
        arrays = [frames[u] for u in utt_ids]
        values, mask = collate_frames(arrays)
        return {"audio_values": values, "audio_mask": mask}, [len(a) for a in arrays]
    return batch


def test_pretraining_learns_the_labels_and_moves_the_encoder():
    frames, train = toy_clips(12, seed=1)
    dev_frames, dev = toy_clips(4, seed=2)
    model = tiny_model()
    before = {n: p.detach().clone() for n, p in model.model.audio_encoder.named_parameters()}
    logged = []
    result = pretrain_encoder(model, batches_of(frames | dev_frames), train, dev, LABELS,
                              epochs=6, learning_rate=3e-3, batch_size=8,
                              log=lambda metrics, epoch: logged.append(epoch))
    assert logged == [1, 2, 3, 4, 5, 6]
    assert result["pretrain_train_accuracy"] >= 0.9 and result["pretrain_dev_accuracy"] >= 0.9
    after = dict(model.model.audio_encoder.named_parameters())
    assert any(not torch.equal(before[n], after[n]) for n in before)
    assert model.model.audio_encoder.training  # handed back ready for SFT


def test_no_epochs_or_a_frozen_encoder_leave_it_alone():
    frames, train = toy_clips(2, seed=1)
    model = tiny_model()
    assert pretrain_encoder(model, batches_of(frames), train, [], LABELS, 0, 1e-3) == {}
    model.model.audio_encoder.requires_grad_(False)
    before = [p.clone() for p in model.model.audio_encoder.parameters()]
    assert pretrain_encoder(model, batches_of(frames), train, [], LABELS, 3, 1e-3) == {}
    assert all(torch.equal(a, b) for a, b in zip(before, model.model.audio_encoder.parameters()))


def test_labels_outside_the_label_set_and_no_clips_are_errors():
    frames, train = toy_clips(2, seed=1)
    with pytest.raises(ValueError, match="not in the label set"):
        pretrain_encoder(tiny_model(), batches_of(frames), train + [("x", "bored")], [], LABELS,
                         1, 1e-3)
    with pytest.raises(ValueError, match="needs labelled train clips"):
        pretrain_encoder(tiny_model(), batches_of(frames), [], [], LABELS, 1, 1e-3)


def test_the_prosody_token_is_warmed_up_too():
    """Labels carried by the prosody vector alone (random frames) are learned through it."""
    rng = np.random.default_rng(3)
    frames, train = toy_clips(12, seed=1)
    dev_frames, dev = toy_clips(4, seed=2)
    frames |= dev_frames
    for utt in frames:  # the frames say nothing; the prosody vector says everything
        frames[utt] = np.zeros_like(frames[utt])
    prosody = {u: (0.5 * rng.normal(size=88) + 4.0 * np.eye(88)[LABELS.index(label)]).astype(np.float32)
               for u, label in train + dev}
    model = tiny_model()
    model.model.config.text_config.hidden_size = 16
    model.model.prosody_projector = torch.nn.Sequential(
        torch.nn.Linear(88, 16), torch.nn.GELU(), torch.nn.Linear(16, 16))
    before = model.model.prosody_projector[0].weight.detach().clone()
    frame_batch = batches_of(frames)

    def batch(utt_ids):
        inputs, n_frames = frame_batch(utt_ids)
        inputs["prosody_values"] = torch.from_numpy(np.stack([prosody[u] for u in utt_ids]))
        return inputs, n_frames

    result = pretrain_encoder(model, batch, train, dev, LABELS, epochs=6, learning_rate=3e-3,
                              batch_size=8)
    assert result["pretrain_dev_accuracy"] >= 0.9
    assert not torch.equal(before, model.model.prosody_projector[0].weight)


def test_perception_heads_learn_the_levels_and_skip_unmeasured_clips():
    frames, train = toy_clips(12, seed=1)
    dev_frames, dev = toy_clips(4, seed=2)
    frames |= dev_frames
    pitch = {u: ("low", "normal", "high")[LABELS.index(label)] for u, label in train + dev}
    pitch[train[0][0]] = "unknown"  # not measured: no target, no error
    result = pretrain_encoder(tiny_model(), batches_of(frames), train, dev, LABELS, epochs=6,
                              learning_rate=3e-3, batch_size=8, levels={"pitch": pitch})
    assert result["pretrain_dev_pitch_accuracy"] >= 0.9
    assert "pretrain_train_pitch_accuracy" in result and "pretrain_dev_energy_accuracy" not in result


def test_keep_best_ends_with_the_best_dev_epoch_weights(monkeypatch):
    import components.speechlm.pretrain as pretrain

    frames, train = toy_clips(6, seed=1)
    dev_frames, dev = toy_clips(2, seed=2)
    dev_accuracy = iter([0.3, 0.8, 0.5, 0.8, 0.4])  # epoch 2 is the best (epoch 4 only ties)
    monkeypatch.setattr(pretrain, "_accuracy", lambda backbone, heads, batches, clips, *a: {
        "emotion": next(dev_accuracy) if clips[0][0] in dev_frames else 1.0})
    model = tiny_model()
    snapshots = {}

    def log(metrics, epoch):
        snapshots[epoch] = {k: v.clone() for k, v in model.model.audio_encoder.state_dict().items()}

    result = pretrain_encoder(model, batches_of(frames | dev_frames), train, dev, LABELS,
                              epochs=5, learning_rate=1e-2, batch_size=8, keep_best=True, log=log)
    assert result["pretrain_best_epoch"] == 2 and result["pretrain_dev_accuracy"] == 0.8
    final = model.model.audio_encoder.state_dict()
    assert all(torch.equal(final[k], snapshots[2][k]) for k in final)
    assert not all(torch.equal(final[k], snapshots[5][k]) for k in final)


def test_the_warmed_up_emotion_head_becomes_the_evidence_tokens_head():
    frames, train = toy_clips(12, seed=1)
    dev_frames, dev = toy_clips(4, seed=2)
    model = tiny_model(evidence=True)
    before = model.model.evidence.head.weight.detach().clone()
    pretrain_encoder(model, batches_of(frames | dev_frames), train, dev, LABELS, epochs=6,
                     learning_rate=3e-3, batch_size=8)
    evidence = model.model.evidence
    assert not torch.equal(before, evidence.head.weight)
    assert not any(p.requires_grad for p in evidence.parameters())  # frozen from here on
    inputs, _ = batches_of(dev_frames)([u for u, _ in dev])
    model.model.audio_encoder.eval()
    with torch.no_grad():
        frames_out, mask = model.model.audio_encoder(inputs["audio_values"], inputs["audio_mask"])
        probs = evidence.probabilities(frames_out, mask, None, None)
    predicted = [LABELS[i] for i in probs.argmax(-1).tolist()]
    assert sum(p == y for p, (_, y) in zip(predicted, dev)) / len(dev) >= 0.9


PITCH_OF = {"neutral": "normal", "angry": "high", "sad": "low"}


def test_the_warmed_up_level_heads_become_the_level_evidence_tokens_heads():
    frames, train = toy_clips(12, seed=1)
    dev_frames, dev = toy_clips(4, seed=2)
    levels = {"pitch": {u: PITCH_OF[y] for u, y in train + dev}}
    model = tiny_model(level_tasks=("pitch",))
    token = model.model.level_evidence["pitch"]
    before = token.head.weight.detach().clone()
    pretrain_encoder(model, batches_of(frames | dev_frames), train, dev, LABELS, epochs=6,
                     learning_rate=3e-3, batch_size=8, levels=levels)
    assert not torch.equal(before, token.head.weight)
    inputs, _ = batches_of(dev_frames)([u for u, _ in dev])
    model.model.audio_encoder.eval()
    with torch.no_grad():
        frames_out, mask = model.model.audio_encoder(inputs["audio_values"], inputs["audio_mask"])
        probs = token.probabilities(frames_out, mask, None, None)
    answers = ["low", "normal", "high"]
    predicted = [answers[i] for i in probs.argmax(-1).tolist()]
    assert sum(p == PITCH_OF[y] for p, (_, y) in zip(predicted, dev)) / len(dev) >= 0.9


def test_level_evidence_without_measured_levels_is_refused():
    frames, train = toy_clips(4, seed=1)
    model = tiny_model(level_tasks=("pitch", "rate"))
    with pytest.raises(ValueError, match=r"\['pitch', 'rate'\].*levels"):
        pretrain_encoder(model, batches_of(frames), train, [], LABELS, epochs=1,
                         learning_rate=1e-3, levels={})
