"""SFT with TRL on a tiny random LM over a tiny demo pipeline: target-only labels, trained
parameters move, the model folder predicts any WAV (a killed run resumes: test_resume.py)."""
import json

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file

from components.cli import main
from components.config import Params
from components.features.frames import load_frames
from components.speechlm.collate import AudioSource, SpeechCollator
from components.speechlm.formats import PERCEPTION_TASKS
from components.speechlm.io import build_speechlm, load_speechlm
from components.speechlm.model import IGNORE
from components.speechlm.prosody_vector import load_stats
from components.speechlm.sft_data import PERCEPTION_COLUMNS, SftDataConfig, build_sft_examples
from components.speechlm.train import ask_perception, train_sft
from components.speechlm.zeroshot import build_zero_shot
from tests.sft_fixture import sft_params
from tests.tiny_models import TINY_SPEECHLM as TINY

pytestmark = pytest.mark.slow


def test_collator_masks_everything_but_the_target(pipeline):
    root, df, feats, records, labels, tiny = pipeline
    model, tokenizer = build_speechlm(str(tiny), **TINY)
    examples = build_sft_examples(feats, df, records, SftDataConfig(perception_ratio=0.5))
    ids = {e["utt_id"] for e in examples}
    collator = SpeechCollator(tokenizer, AudioSource(model, frames=load_frames(
        root / "features" / "frames", ids)), labels)
    batch = collator(examples[:4])
    for row, labs, example in zip(batch["input_ids"], batch["labels"], examples[:4]):
        kept = labs[labs != IGNORE]
        assert tokenizer.decode(kept) == example["target"] + collator.ending(example)
        assert collator.ending(example) == tokenizer.eos_token  # training targets are complete
        n_audio = int((row == model.config.audio_token_id).sum())
        assert n_audio == model.n_audio_tokens(len(collator.source.frames[example["utt_id"]]))
    # the length the batches are grouped by is the collated row's
    assert [collator.length(e) for e in examples[:4]] == batch["attention_mask"].sum(-1).tolist()
    assert batch["audio_values"].shape[0] == 4 and batch["audio_mask"].dtype == torch.bool
    dev = build_sft_examples(feats, df, records, SftDataConfig(perception_ratio=0.0,
                                                               splits=["dev"]))
    assert dev and all(collator.ending(e) == "" for e in dev)  # label-only: no premature stop


def test_collator_weights_the_heard_answer(pipeline):
    root, df, feats, records, labels, tiny = pipeline
    model, tokenizer = build_speechlm(str(tiny), **TINY)
    examples = build_sft_examples(feats, df, records, SftDataConfig(perception_ratio=0.5))
    source = AudioSource(model, frames=load_frames(root / "features" / "frames",
                                                   {e["utt_id"] for e in examples}))
    assert "loss_weights" not in SpeechCollator(tokenizer, source, labels)(examples[:2])
    collator = SpeechCollator(tokenizer, source, labels, answer_weight=5.0)
    ser = next(e for e in examples if e["task"] == "ser")
    perception = next(e for e in examples if e["task"] != "ser")
    batch = collator([ser, perception])
    for row, labs, weights, example in zip(batch["input_ids"], batch["labels"],
                                            batch["loss_weights"], (ser, perception)):
        assert (weights[labs == IGNORE] == 0).all() and (weights[labs != IGNORE] > 0).all()
        heard = tokenizer.decode(row[weights == 5.0]).strip()
        assert heard == (example["label"] if example["task"] == "ser" else example["target"])
    assert (batch["loss_weights"][0] == 1.0).sum() > 5  # the rationale keeps weight 1


def test_collator_marks_each_ser_rows_label_token_and_every_labels_token_there(pipeline):
    """With `label_smoothing`, a SER row's `label_position` is its label's token in the row,
    and `label_choices` are the tokens each label of the set would have there; perception
    rows get none. A label set whose labels share their first token is refused by name."""
    root, df, feats, records, labels, tiny = pipeline
    model, tokenizer = build_speechlm(str(tiny), **TINY)
    examples = build_sft_examples(feats, df, records, SftDataConfig(perception_ratio=0.5))
    source = AudioSource(model, frames=load_frames(root / "features" / "frames",
                                                   {e["utt_id"] for e in examples}))
    plain = SpeechCollator(tokenizer, source, labels)(examples[:2])
    assert not {"label_smoothing", "label_position", "label_choices"} & set(plain)
    ser = [e for e in examples if e["task"] == "ser"][:3]
    perception = next(e for e in examples if e["task"] != "ser")
    batch = SpeechCollator(tokenizer, source, labels, label_smoothing=0.1)(ser + [perception])
    assert "loss_weights" in batch  # the weighted loss, which applies the smoothing, runs
    assert batch["label_smoothing"].tolist() == pytest.approx([0.1, 0.1, 0.1, 0.0])
    assert batch["label_position"][-1] == -1
    for row, at, choices, example in zip(batch["input_ids"], batch["label_position"],
                                         batch["label_choices"], ser):
        assert [tokenizer.decode([t]).strip() for t in choices] == labels
        assert row[at] == choices[labels.index(example["label"])]
        assert batch["labels"][ser.index(example)][at] == row[at]  # a target, not the prompt
    with pytest.raises(ValueError, match="label smoothing needs labels that part at one token"):
        SpeechCollator(tokenizer, source, labels + [labels[0] + "ness"],
                       label_smoothing=0.1)(ser[:1])
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\)"):
        SpeechCollator(tokenizer, source, labels, label_smoothing=1.0)


def test_the_sft_loss_moves_eps_of_each_label_tokens_target_to_the_label_set(pipeline):
    """The trainer's loss with `label_smoothing` eps exceeds the hard-label loss by eps x
    (mean over the label set of -log p(label) - (-log p(gold))) at each SER row's label
    token, times its weight, over the summed weights: nothing else in the loss changes."""
    from components.speechlm.train import answer_weighted_trainer

    root, df, feats, records, labels, tiny = pipeline
    model, tokenizer = build_speechlm(str(tiny), **TINY)
    model.eval()
    examples = build_sft_examples(feats, df, records, SftDataConfig(perception_ratio=0.5))
    ser = [e for e in examples if e["task"] == "ser"][:2]
    batch_examples = ser + [next(e for e in examples if e["task"] != "ser")]
    source = AudioSource(model, frames=load_frames(root / "features" / "frames",
                                                   {e["utt_id"] for e in batch_examples}))
    trainer = answer_weighted_trainer()
    trainer = trainer.__new__(trainer)  # compute_loss needs no trainer state on this path
    losses = {}
    for eps in (0.0, 0.3):
        batch = SpeechCollator(tokenizer, source, labels, answer_weight=4.0,
                               label_smoothing=eps)(batch_examples)
        with torch.no_grad():
            losses[eps] = trainer.compute_loss(model, dict(batch)).item()
    weights = batch["loss_weights"][:, 1:] * (batch["labels"][:, 1:] != IGNORE)
    inputs = {k: v for k, v in batch.items() if k not in (
        "labels", "loss_weights", "label_smoothing", "label_position", "label_choices")}
    with torch.no_grad():
        logits = model(**inputs).logits.float()
    shift = 0.0
    for row, at in enumerate(batch["label_position"].tolist()[:2]):
        logp = logits[row, at - 1].log_softmax(-1)
        gold = batch["input_ids"][row, at]
        spread = -logp[batch["label_choices"][row]].mean()
        shift += weights[row, at - 1].item() * 0.3 * (spread + logp[gold]).item()
    assert abs(shift) > 1e-3  # the untrained model does not already give the label set eps
    assert losses[0.3] - losses[0.0] == pytest.approx(shift / weights.sum().item(), rel=2e-3)


def test_activation_checkpointing_gives_the_same_loss_and_gradients(pipeline, monkeypatch):
    """`sft.activation_checkpointing` recomputes the LM layers in the backward pass: the
    audio spliced into the backbone must still reach the LoRA and projector gradients."""
    from components.speechlm.train import answer_weighted_trainer

    root, df, feats, records, labels, tiny = pipeline
    model, tokenizer = build_speechlm(str(tiny), **TINY)
    model.train()
    examples = build_sft_examples(feats, df, records, SftDataConfig(perception_ratio=0.5))[:3]
    source = AudioSource(model, frames=load_frames(root / "features" / "frames",
                                                   {e["utt_id"] for e in examples}))
    batch = SpeechCollator(tokenizer, source, labels, label_smoothing=0.1)(examples)
    trainer = answer_weighted_trainer()
    trainer = trainer.__new__(trainer)
    calls, mlp = [], type(model.model.language_model.layers[0].mlp)
    forward = mlp.forward  # counted in the class: module hooks stay outside the recomputation
    monkeypatch.setattr(mlp, "forward", lambda self, *a, **k: calls.append(1) or forward(
        self, *a, **k))
    runs = []
    for checkpointed in (False, True):
        if checkpointed:
            model.activation_checkpointing_enable()
        model.zero_grad()
        calls.clear()
        torch.manual_seed(0)  # the same dropout masks (recomputation restores the RNG state)
        loss = trainer.compute_loss(model, dict(batch))
        loss.backward()
        runs.append((loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()
                                   if p.grad is not None}, len(calls)))
    (plain, plain_grads, plain_calls), (again, grads, layer_calls) = runs
    assert plain_calls and layer_calls == 2 * plain_calls  # each layer ran again in backward
    assert again == pytest.approx(plain, rel=1e-5)
    assert set(grads) == set(plain_grads)
    assert any("lora_" in n for n in grads) and any("projector" in n for n in grads)
    for name, grad in plain_grads.items():
        assert torch.allclose(grads[name], grad, rtol=1e-4, atol=1e-6), name


def test_the_stage_has_the_trainer_checkpoint_activations_when_asked(pipeline, tmp_path,
                                                                    monkeypatch):
    from components.speechlm.model import SpeechLMForCausalLM

    root, *_, tiny = pipeline
    params = sft_params(root, tiny)
    params.sft.activation_checkpointing, params.sft.max_steps = True, 1
    params.sft.checkpoint_dir = str(tmp_path / "checkpoints")
    enable, calls = SpeechLMForCausalLM.activation_checkpointing_enable, []
    monkeypatch.setattr(SpeechLMForCausalLM, "activation_checkpointing_enable",
                        lambda self, *a, **k: calls.append(k) or enable(self, *a, **k))
    assert train_sft(params, tmp_path / "model")["steps"] == 1
    assert len(calls) == 1


def test_collator_weights_the_rationales_claims_about_the_voice(pipeline):
    """With `claim_weight`, the tokens of each level the rationale states ("the voice is loud")
    carry it; the label keeps `answer_weight`, the other words 1, perception answers no claims."""
    from components.distill.verify import acoustic_claims

    root, df, feats, records, labels, tiny = pipeline
    model, tokenizer = build_speechlm(str(tiny), **TINY)
    examples = build_sft_examples(feats, df, records, SftDataConfig(perception_ratio=0.5))
    ser = [e for e in examples if e["task"] == "ser" and acoustic_claims(e["target"])][:3]
    perception = next(e for e in examples if e["task"] != "ser")
    source = AudioSource(model, frames=load_frames(root / "features" / "frames",
                                                   {e["utt_id"] for e in ser + [perception]}))
    collator = SpeechCollator(tokenizer, source, labels, claim_weight=3.0)
    batch = collator(ser + [perception])
    assert "loss_weights" in batch  # emitted with the answer weight left at 1
    for row, weights, example in zip(batch["input_ids"], batch["loss_weights"], ser):
        claims = acoustic_claims(example["target"])
        heard = tokenizer.decode(row[weights == 3.0])
        for claim in claims:  # every claim's words, and no other, carry the weight
            assert claim.text.split()[-1] in heard
        assert len(heard.split()) <= sum(len(c.text.split()) + 1 for c in claims)
        assert example["label"] not in heard.split() and (weights == 1.0).sum() > 5
    assert set(batch["loss_weights"][-1].unique().tolist()) <= {0.0, 1.0}


def test_sft_trains_and_predicts(pipeline, tmp_path, capsys, monkeypatch):
    from components.speechlm.batching import LengthGroupedShuffledSampler

    root, df, feats, records, labels, tiny = pipeline
    params = sft_params(root, tiny)
    out = tmp_path / "model"
    drawn = []
    draw = LengthGroupedShuffledSampler.__iter__
    monkeypatch.setattr(LengthGroupedShuffledSampler, "__iter__",
                        lambda self: drawn.append(self.epoch) or draw(self))
    summary = train_sft(params, out)
    assert drawn and drawn[0] == 0  # the trainer's batches came from the length-grouped sampler
    assert summary["steps"] == 3 and 0.0 <= summary["dev_accuracy"] <= 1.0
    assert 0.0 <= summary["pretrain_dev_accuracy"] <= 1.0  # the encoder was warmed up first
    assert (out / "task.json").exists() and (out / "adapter_model.safetensors").exists()
    assert (out / "encoder_classifier.safetensors").exists()
    # checkpoints live outside the model folder, only until training finished (test_resume.py)
    assert not (out / "checkpoints").exists() and not any(root.glob("checkpoints/*"))
    trained, _ = load_speechlm(out)
    moved = [n for n, p in trained.named_parameters()
             if "lora_B" in n or "projector" in n]
    assert moved
    lora_b = dict(trained.named_parameters())[next(n for n in moved if "lora_B" in n)]
    assert lora_b.abs().sum() > 0  # LoRA B starts at zero: training moved it
    # the warm-up's encoder and prosody projector, which its heads read, were kept as they were
    warm = load_file(out / "encoder_classifier.safetensors")
    state = trained.model.state_dict()
    kept = [k for k in warm if not k.startswith("head.")]
    assert any(k.startswith("prosody_projector.") for k in kept)
    assert all(torch.equal(state[k], warm[k]) for k in kept)
    report = json.loads((out / "eval.json").read_text())
    assert {"dev_accuracy", "dev_accuracy_unknown_speaker", "majority_rate",
            "perception_accuracy", "samples"} <= set(report)
    # one level evidence token per perception task, its level words' embeddings filled in
    assert trained.config.level_evidence == {t: len(a) for t, (_, a) in PERCEPTION_TASKS.items()}
    assert all(token.label_embeddings.abs().sum(-1).gt(0).all()
               for token in trained.model.level_evidence.values())
    assert report["examples"]["prosody_norm"]["train"]["population"] > 0
    # the evidence token's sharpening was chosen on dev and the saved model carries it
    tried = report["evidence_power_dev_ua"]
    assert sorted(map(float, tried)) == sorted(params.sft.evidence_power_grid)
    assert report["evidence_power"] == trained.config.evidence_power == trained.model.evidence.power
    assert tried[str(report["evidence_power"])] == max(tried.values())

    wav = tmp_path / "clip.wav"
    t = np.arange(48000) / 48000
    stereo = 0.3 * np.sin(2 * np.pi * 180 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
    sf.write(wav, np.stack([stereo, stereo], axis=1), 48000)  # any rate, any channels
    assert (out / "prosody_norm.json").exists()  # an unknown speaker's prosody normalisation
    assert main(["predict", "--model", str(out), str(wav), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(result) == {"path", "transcript", "label", "probabilities", "rationale", "cues",
                           "well_formed", "flags", "error"}
    assert result["label"] in labels and result["error"] is None
    assert result["label"] == max(result["probabilities"], key=result["probabilities"].get)
    assert result["cues"]["pitch_level"] in ("low", "normal", "high")
    other = tmp_path / "other.wav"
    sf.write(other, 0.5 * stereo[:24000], 16000)
    assert main(["predict", "--model", str(out), str(wav), str(other), "--json",
                 "--same-speaker"]) == 0
    results = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()
               if line.startswith("{")]
    assert [r["path"] for r in results] == [str(wav), str(other)]

    served = tmp_path / "served"  # merged for serving: the same answers, no adapter
    assert main(["model", "export", "--model", str(out), "--out", str(served)]) == 0
    capsys.readouterr()
    assert not (served / "adapter_model.safetensors").exists()
    assert main(["predict", "--model", str(served), str(wav), str(other), "--json",
                 "--same-speaker"]) == 0
    # merging LoRA into the weights changes the float rounding only
    assert [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()
            if line.startswith("{")] == \
        [{**r, "probabilities": pytest.approx(r["probabilities"], abs=1e-5)} for r in results]


def test_every_measured_perception_question_is_asked_and_scored(pipeline, trained):
    root, df, feats, records, labels, _ = pipeline
    model, tokenizer = load_speechlm(trained)
    ser = build_sft_examples(feats, df, records, SftDataConfig(
        perception_ratio=0.0, splits=["dev"], population_norm_share=0.0, label_only_fallback=True))
    source = AudioSource.from_features(model, root / "features" / "frames", df, root / "audio",
                                       {e["utt_id"] for e in ser}, feats, load_stats(trained))
    rows = ask_perception(model, SpeechCollator(tokenizer, source, labels), ser, feats)
    measured = feats.set_index("utt_id")
    expected = {(e["utt_id"], task, measured.at[e["utt_id"], column]) for e in ser
                for task, column in PERCEPTION_COLUMNS.items()
                if measured.at[e["utt_id"], column] in PERCEPTION_TASKS[task][1]}
    assert len(rows) == len(expected) > len(ser)
    assert {(r["utt_id"], r["task"], r["level"]) for r in rows} == expected
    assert all(r["hit"] == (r["answer"] == r["level"]) for r in rows)


def test_zero_shot_baseline_scores_dev_and_predicts_any_wav(pipeline, tmp_path, capsys):
    root, df, feats, _, labels, tiny = pipeline
    levels = root / "features" / "levels.json"
    params = Params()
    params.zeroshot.features = str(root / "features" / "features.parquet")
    params.zeroshot.manifest = str(root / "manifest.parquet")
    params.zeroshot.levels = str(levels)
    params.zeroshot.lm = str(tiny)
    params.zeroshot.eval_clips, params.zeroshot.max_new_tokens = 4, 8
    out = tmp_path / "zeroshot"
    result = build_zero_shot(params, out)
    dev = df[(df["split"] == "dev") & df["label"].isin(labels)]
    assert result["dev_clips"] == min(4, len(dev))
    assert 0.0 <= result["dev_accuracy"] <= 1.0 and result["majority_label"] in labels
    trained, _ = load_speechlm(out)
    assert not trained.has_lora  # the base LM, as it comes
    assert json.loads((out / "task.json").read_text())["inputs"] == "text"

    wav = tmp_path / "clip.wav"
    t = np.arange(22050) / 22050
    sf.write(wav, 0.3 * np.sin(2 * np.pi * 200 * t * (1 + 0.2 * t)), 22050)
    assert main(["predict", "--model", str(out), str(wav), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["label"] in labels and sum(result["probabilities"].values()) == \
        pytest.approx(1.0)
