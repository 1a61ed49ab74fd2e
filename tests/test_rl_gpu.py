"""GRPO-PTR on a CUDA device (skipped elsewhere): a step of the audio trainer in this process,
with bf16 where the GPU computes it and audio in every backbone forward, and the `rl` stage
with one Ray Train worker that asks Ray for a GPU (`rl.ray.use_gpu`)."""
import pytest
import torch

from components.device import trainer_precision
from tests.rl_fixture import SPREAD, spy_audio_forwards, tiny_rl_params
from tests.sft_fixture import moved_parameters, trainable

CUDA = torch.device("cuda", 0)
pytestmark = [pytest.mark.gpu, pytest.mark.slow,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_a_grpo_step_runs_on_the_gpu_with_audio_in_every_forward(pipeline, trained, tmp_path):
    from components.rl.worker import build_trainer

    params = tiny_rl_params(pipeline[0], trained, tmp_path)
    params.rl.rewards, params.rl.learning_rate = {SPREAD: 1.0}, 5e-2
    trainer, *_ = build_trainer(params, 1, CUDA)
    assert trainer.args.bf16 == trainer_precision(CUDA)["bf16"] and not trainer.args.use_cpu
    model = trainer.model
    seen = spy_audio_forwards(model)
    before = trainable(model)
    trainer.train()
    assert trainer.state.global_step == 1
    assert {p.device for p in model.parameters()} == {CUDA}
    # generation's prefill, the reference log-probs and the loss forward, all with audio on CUDA
    assert len(seen) >= 3 and set(seen) == {(CUDA, CUDA)}
    moved = moved_parameters(before, model)
    assert moved and all("lora_" in n and "language_model" in n for n in moved)


def test_the_rl_stage_trains_on_a_gpu_worker_under_ray(pipeline, trained, tmp_path):
    from components.rl.stage import run_rl
    from components.serve.predictor import load_predictor
    from components.serve.rows import predict_rows

    params = tiny_rl_params(pipeline[0], trained, tmp_path)
    rl = params.rl
    rl.rewards, rl.learning_rate, rl.max_steps = {SPREAD: 1.0}, 5e-2, 2
    rl.ray.num_workers, rl.ray.use_gpu, rl.ray.gpus_per_worker = 1, True, 1.0
    rl.ray.cpus_per_worker, rl.ray.reward_actor_cpus = 1.0, 0.0
    summary = run_rl(params)
    assert summary["device"] == "cuda:0" and summary["steps"] == 2 and summary["workers"] == 1
    audio = next(p for p in (pipeline[0] / "audio").rglob("*.wav"))
    predictor = load_predictor(tmp_path / "rl", device="cuda")
    # a transcript given: no speech recognition in the way of the GPU path
    out, = predict_rows(predictor, [str(audio)], rationale=False,
                        transcripts=["Kids are talking by the door."])
    assert out["error"] is None and abs(sum(out["probabilities"].values()) - 1) < 1e-4
