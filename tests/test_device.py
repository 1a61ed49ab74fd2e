"""`base.device`: which device a name resolves to on which machine (CUDA and MPS faked), the
errors that name the param, the trainer's precision fields, and (on a CUDA machine) SFT and
prediction that really run on the GPU."""
import contextlib
import json

import pytest
import torch

from components.config import Params
from components.device import (
    ray_worker_device,
    resolve_device,
    to_device,
    trainer_precision,
    training_dtype,
)
from tests.sft_fixture import moved_parameters

CUDA, CPU, MPS = torch.device("cuda", 0), torch.device("cpu"), torch.device("mps")


@pytest.fixture
def machine(monkeypatch):
    """Fake the accelerators: machine(cuda=n GPUs, mps=..., bf16=native bf16 on the GPUs).
    Returns the CUDA devices the bf16 question was asked about."""
    asked = []

    def fake(cuda: int = 0, mps: bool = False, bf16: bool = True):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: cuda)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
        # Emulated bf16 counts as unsupported: only native bf16 is asked for.
        monkeypatch.setattr(torch.cuda, "is_bf16_supported",
                            lambda including_emulation=True: bf16 or including_emulation)
        monkeypatch.setattr(torch.cuda, "device", on_device)
        return asked

    def on_device(device):
        asked.append(torch.device(device))
        return contextlib.nullcontext()
    return fake


@pytest.mark.parametrize("cuda, mps, expected", [
    (0, False, CPU), (0, True, MPS), (1, False, CUDA), (2, True, CUDA)])
def test_auto_takes_cuda_then_mps_then_the_cpu(machine, cuda, mps, expected):
    machine(cuda=cuda, mps=mps)
    assert resolve_device("auto") == expected


def test_named_devices_resolve_to_themselves(machine):
    machine(cuda=2, mps=True)
    assert resolve_device("cpu") == CPU  # the CPU even where a GPU is free
    assert resolve_device("cuda") == CUDA  # the first GPU, the one a Trainer uses
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device("mps") == MPS


@pytest.mark.parametrize("name", ["gpu", "CUDA", "cuda:", "cuda:x", "cuda:-1", " cpu", ""])
def test_an_unknown_name_is_an_error_naming_the_param(machine, name):
    machine(cuda=1)
    with pytest.raises(ValueError, match=r"base\.device: unknown device .*auto, cpu, cuda"):
        resolve_device(name)


def test_a_device_the_machine_lacks_is_an_error(machine):
    machine(cuda=0, mps=False)
    for name in ("cuda", "cuda:0"):
        with pytest.raises(ValueError, match=f"base.device is {name} but CUDA is not available"):
            resolve_device(name)
    with pytest.raises(ValueError, match="base.device is mps but MPS is not available"):
        resolve_device("mps")
    machine(cuda=2)
    with pytest.raises(ValueError, match=r"has 2 CUDA device\(s\) \(cuda:0 to cuda:1\)"):
        resolve_device("cuda:2")


def test_training_precision_is_bf16_only_on_a_gpu_that_computes_it(machine):
    asked = machine(cuda=2, bf16=True)
    assert training_dtype(CPU) == training_dtype(MPS) == torch.float32
    assert training_dtype(torch.device("cuda", 1)) == torch.bfloat16
    assert asked == [torch.device("cuda", 1)]  # the GPU in question, not the current one
    machine(cuda=1, bf16=False)  # emulated bf16 (pre-Ampere): slower than fp32
    assert training_dtype("cuda:0") == torch.float32


def test_trainer_precision_fields(machine):
    machine(cuda=2, bf16=True)
    assert trainer_precision(CPU) == {"use_cpu": True, "bf16": False}
    assert trainer_precision(MPS) == {"use_cpu": False, "bf16": False}
    assert trainer_precision(CUDA) == {"use_cpu": False, "bf16": True}
    with pytest.raises(ValueError, match="CUDA_VISIBLE_DEVICES=1"):
        trainer_precision(torch.device("cuda", 1))  # the Trainer always takes cuda:0
    machine(cuda=1, bf16=False)
    assert trainer_precision(CUDA) == {"use_cpu": False, "bf16": False}


def test_trl_runs_on_the_cpu_with_the_cpu_fields(tmp_path):
    from trl import SFTConfig

    args = SFTConfig(output_dir=str(tmp_path), report_to=[], activation_checkpointing=False,
                     **trainer_precision(CPU))
    assert args.device == CPU and not args.bf16


def test_to_device_moves_the_tensors_and_keeps_the_rest():
    moved = to_device({"input_ids": torch.ones(2, 3), "n": 3}, torch.device("meta"))
    assert moved["input_ids"].device.type == "meta" and moved["n"] == 3


@pytest.mark.parametrize("mps, expected", [(False, CPU), (True, MPS)])
def test_ray_workers_without_a_gpu_of_their_own_leave_cuda_alone(machine, mps, expected):
    machine(cuda=2, mps=mps)  # Ray shows zero-GPU workers the node's GPUs all the same
    assert ray_worker_device(False, "auto") == expected
    assert ray_worker_device(False, "cpu") == CPU
    for name in ("cuda", "cuda:1"):
        with pytest.raises(ValueError, match=f"base.device is {name} but rl.ray.use_gpu is "
                                             "false"):
            ray_worker_device(False, name)


def test_ray_workers_with_a_gpu_take_the_one_ray_gave_them(machine, monkeypatch):
    import ray.train.torch

    machine(cuda=2)
    monkeypatch.setattr(ray.train.torch, "get_device", lambda: torch.device("cuda", 1))
    assert ray_worker_device(True, "auto") == torch.device("cuda", 1)
    assert ray_worker_device(True, "cpu") == torch.device("cuda", 1)


def test_rl_refuses_a_cuda_device_without_ray_gpus_before_starting_ray(machine, tmp_path,
                                                                      monkeypatch):
    from components.rl import stage

    params = Params()
    params.rl.sft = str(tmp_path)
    (tmp_path / "adapter_model.safetensors").write_bytes(b"")
    params.base.device = "cuda"
    machine(cuda=1)
    monkeypatch.setattr(stage, "_start_ray", lambda cfg: pytest.fail("Ray was started"))
    with pytest.raises(ValueError, match="rl.ray.use_gpu is false"):
        stage.run_rl(params)


def test_sft_refuses_a_device_before_reading_anything(machine, tmp_path):
    from components.speechlm.train import train_sft

    params = Params()  # its inputs do not exist: the device is checked first
    machine(cuda=0)
    params.base.device = "cuda"
    with pytest.raises(ValueError, match="CUDA is not available"):
        train_sft(params, tmp_path / "sft")
    machine(cuda=2)
    params.base.device = "cuda:1"
    with pytest.raises(ValueError, match="CUDA_VISIBLE_DEVICES"):
        train_sft(params, tmp_path / "sft")


def test_zero_shot_refuses_a_device_before_reading_anything(machine, tmp_path):
    from components.speechlm.zeroshot import build_zero_shot

    params = Params()  # its inputs do not exist: the device is checked first
    machine(cuda=0)
    params.base.device = "cuda"
    with pytest.raises(ValueError, match="CUDA is not available"):
        build_zero_shot(params, tmp_path / "zeroshot")


def test_int8_serving_is_refused_off_the_cpu(machine, tmp_path):
    from components.serve.predictor import load_predictor

    (tmp_path / "task.json").write_text("{}")
    machine(cuda=1)
    with pytest.raises(ValueError, match="int8 .* runs on the CPU only"):
        load_predictor(tmp_path, dtype="int8", device="auto")


# ---------------------------------------------------------------------- on a CUDA machine
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module")
def cuda_sft(pipeline, tmp_path_factory):
    """A tiny SFT run with base.device cuda: (model folder, summary, the trained model, its
    trainable parameters as built, on the CPU)."""
    from tests.sft_fixture import sft_params, train_recording

    root, *_, tiny = pipeline
    params = sft_params(root, tiny)
    params.base.device = "cuda"
    out = tmp_path_factory.mktemp("cuda_sft") / "sft"
    with pytest.MonkeyPatch.context() as patch:
        summary, built = train_recording(params, out, patch)
    return out, summary, built["model"], built["before"]


@pytest.mark.gpu
@pytest.mark.slow
@needs_cuda
def test_sft_trains_on_the_gpu(cuda_sft):
    out, summary, model, before = cuda_sft
    assert summary["steps"] == 3 and "pretrain_dev_accuracy" in summary  # warm-up ran too
    assert {p.device for p in model.parameters()} == {CUDA}
    assert {p.dtype for p in model.parameters()} == {torch.float32}  # bf16 is autocast only
    moved = moved_parameters(before, model)
    for part in ("lora_B", "audio_encoder", "projector"):
        assert any(part in n for n in moved), part
    assert (out / "adapter_model.safetensors").exists() and (out / "eval.json").exists()
    capability = torch.cuda.get_device_capability(0)
    assert trainer_precision(CUDA)["bf16"] == (capability >= (8, 0) or bool(torch.version.hip))


@pytest.mark.gpu
@pytest.mark.slow
@needs_cuda
def test_prediction_runs_on_the_gpu_and_agrees_with_the_cpu(cuda_sft, pipeline):
    from components.evaluate.systems import encoder_predictions
    from components.serve.predictor import (
        clips_from_features,
        frames_of,
        load_predictor,
    )

    out, *_ = cuda_sft
    root, df, feats, *_ = pipeline
    rows = feats[feats["utt_id"].isin(df[df["split"] == "test"]["utt_id"])].head(4)
    frames = frames_of(root / "features" / "frames", rows["utt_id"].tolist())
    on_gpu = load_predictor(out, max_new_tokens=8, device="cuda")
    on_cpu = load_predictor(out, max_new_tokens=8)
    assert on_gpu.device == CUDA and {p.device for p in on_gpu.model.parameters()} == {CUDA}
    gpu_results = on_gpu.predict_clips(clips_from_features(rows, frames, on_gpu))
    cpu_results = on_cpu.predict_clips(clips_from_features(rows, frames, on_cpu))
    for a, b in zip(gpu_results, cpu_results, strict=True):
        assert a["probabilities"] == pytest.approx(b["probabilities"], abs=1e-3)
        assert a["output"].startswith(f"Emotion: {a['label']}")  # the rationale was generated
    half = load_predictor(out, max_new_tokens=4, dtype="bfloat16", device="cuda")
    for result in half.predict_clips(clips_from_features(rows, frames, half)):
        assert sum(result["probabilities"].values()) == pytest.approx(1.0, abs=1e-2)
    frames_dir = root / "features" / "frames"
    gpu_encoder, _ = encoder_predictions(out, rows, frames_dir, str(root), device="cuda")
    cpu_encoder, _ = encoder_predictions(out, rows, frames_dir, str(root))
    for a, b in zip(gpu_encoder["probabilities"], cpu_encoder["probabilities"], strict=True):
        assert a == pytest.approx(b, abs=1e-4)


@pytest.mark.gpu
@pytest.mark.slow
@needs_cuda
def test_the_zero_shot_baseline_generates_on_the_gpu_as_on_the_cpu(pipeline, tmp_path):
    """Greedy fp32 decoding: the same dev answers on either device; the saved folder loads."""
    from components.speechlm.zeroshot import build_zero_shot

    root, *_, tiny = pipeline
    answers = {}
    for device in ("cpu", "cuda"):
        params = Params()
        params.base.device = device
        params.zeroshot.features = str(root / "features" / "features.parquet")
        params.zeroshot.manifest = str(root / "manifest.parquet")
        params.zeroshot.levels = str(root / "features" / "levels.json")
        params.zeroshot.lm = str(tiny)
        params.zeroshot.eval_clips, params.zeroshot.max_new_tokens = 4, 8
        build_zero_shot(params, tmp_path / device)
        answers[device] = json.loads((tmp_path / device / "eval.json").read_text())["samples"]
    assert answers["cuda"]["utt_id"] == answers["cpu"]["utt_id"]
    assert answers["cuda"]["predicted"] == answers["cpu"]["predicted"]
