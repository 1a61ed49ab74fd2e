"""The precision a CUDA GPU trains in, on the CPU: bf16 autocast with float32 weights
(`trainer_precision` gives `bf16: true` on a GPU that computes it). No GPU is needed to see
that SFT and a GRPO step run under it with the audio spliced in, that every forward of the
language model computes in bf16 and that the weights the optimiser updates stay float32."""
import pytest
import torch

import components.device
from tests.rl_fixture import SPREAD, spy_audio_forwards, tiny_rl_params
from tests.sft_fixture import moved_parameters, sft_params, train_recording, trainable

pytestmark = pytest.mark.slow


def bf16_on_the_cpu(device) -> dict:
    return {"use_cpu": True, "bf16": True}


def record_linear_outputs(model) -> list[tuple[torch.dtype, bool]]:
    """(dtype, grad enabled) of every output of the language model's first query projection."""
    seen = []
    linear = next(m for n, m in model.named_modules() if n.endswith("q_proj.base_layer"))
    linear.register_forward_hook(
        lambda m, a, out: seen.append((out.dtype, torch.is_grad_enabled())))
    return seen


def test_sft_trains_under_bf16_autocast(pipeline, tmp_path, monkeypatch):
    from components.speechlm import train

    monkeypatch.setattr(train, "trainer_precision", bf16_on_the_cpu)
    root, *_, tiny = pipeline
    params = sft_params(root, tiny)
    params.sft.max_steps, params.sft.encoder_pretrain_epochs = 2, 1
    params.sft.checkpoint_dir = str(tmp_path / "checkpoints")
    hooked = {}
    summary, built = train_recording(
        params, tmp_path / "sft", monkeypatch,
        lambda model: hooked.update(forwards=record_linear_outputs(model)))
    assert summary["steps"] == 2
    model, forwards = built["model"], hooked["forwards"]
    assert (torch.bfloat16, True) in forwards  # the training forwards ran in bf16
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    moved = moved_parameters(built["before"], model)
    for part in ("lora_B", "projector"):
        assert any(part in n for n in moved), part
    after = dict(model.named_parameters())
    assert all(torch.isfinite(after[n]).all() for n in moved)
    assert (tmp_path / "sft" / "adapter_model.safetensors").exists()


def test_a_grpo_step_runs_under_bf16_autocast_with_audio_in_every_forward(
        pipeline, trained, tmp_path, monkeypatch):
    from components.rl.worker import build_trainer

    monkeypatch.setattr(components.device, "trainer_precision", bf16_on_the_cpu)
    params = tiny_rl_params(pipeline[0], trained, tmp_path)
    params.rl.rewards, params.rl.learning_rate = {SPREAD: 1.0}, 5e-2
    trainer, *_ = build_trainer(params, 1, torch.device("cpu"))
    assert trainer.args.bf16 and trainer.args.use_cpu
    model = trainer.model
    audio, forwards = spy_audio_forwards(model), record_linear_outputs(model)
    before = trainable(model)
    trainer.train()
    assert trainer.state.global_step == 1
    assert len(audio) >= 3  # generation's prefill, the reference log-probs, the loss forward
    # every forward in bf16: generation and the reference without gradients, the loss with them
    assert {dtype for dtype, _ in forwards} == {torch.bfloat16}
    assert {grad for _, grad in forwards} == {False, True}
    moved, after = moved_parameters(before, model), dict(model.named_parameters())
    assert moved and all("lora_" in n and after[n].dtype == torch.float32
                         and torch.isfinite(after[n]).all() for n in moved)
