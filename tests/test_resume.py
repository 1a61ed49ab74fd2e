"""A stage killed with SIGKILL part-way and run again redoes nothing it had finished, and ends
with the outputs of a run that was never interrupted: features (per-clip cache), distill
(generation cache) and SFT (checkpoints outside the model folder, which DVC deletes)."""
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import load_file

from components.config import FeaturesConfig, Params, SplitConfig, as_dict, load_params
from components.distill.stage import run_distill
from components.features.frames import load_frames
from components.features.stage import run_features
from components.prepare.loaders import load_corpus
from components.prepare.manifest import build_manifest
from components.prepare.schema import write_manifest
from tests.corpus_fixtures import write_ravdess_fixture
from tests.openai_stub import StubChatServer
from tests.processes import cli, kill_when, run
from tests.sft_fixture import sft_params
from tests.test_distill_stage import write_inputs

REPO = Path(__file__).resolve().parent.parent


def rerun(cmd: list[str], outs: Path) -> str:
    """Delete the stage's outputs, as `dvc repro` does before it runs a stage, then run it."""
    shutil.rmtree(outs, ignore_errors=True)
    return run(cmd)



def test_killed_features_resume_from_the_cache_to_the_same_outputs(tmp_path):
    corpus = write_ravdess_fixture(tmp_path / "ravdess", emotions=("01", "03", "04"),
                                   seconds=0.8)
    df, meta, _ = build_manifest(load_corpus("ravdess", corpus), "ravdess", corpus, None, {},
                                 0.0, SplitConfig(), 0)
    write_manifest(df, meta, tmp_path / "manifest.parquet")
    cache = tmp_path / "cache"
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"features": {"cache_dir": str(cache), "workers": 1,
                                                   "shard_size": 4}}))
    cmd = cli(params, "features", "--manifest", str(tmp_path / "manifest.parquet"),
              "--out", str(tmp_path / "out"))

    def rows():  # a clip's measured row is written last, after its frame features
        return [p for p in cache.rglob("*.json") if not p.name.endswith(".f0.json")]

    kill_when(cmd, lambda: len(rows()) >= 3)
    finished = {p: (p.stat().st_ino, p.stat().st_mtime_ns)
                for p in rows() + list(cache.rglob("*.npy"))}
    assert 3 <= len(rows()) < len(df) and not (tmp_path / "out" / "features.parquet").exists()
    rerun(cmd, tmp_path / "out")
    assert len(rows()) == len(df)
    # nothing finished before the kill was measured again (a new entry is a new file)
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in finished} == finished

    reference = Params()
    reference.features = FeaturesConfig(cache_dir=str(tmp_path / "fresh"), workers=1,
                                        shard_size=4)
    run_features(reference, tmp_path / "manifest.parquet", tmp_path / "ref", None)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "out" / "features.parquet"),
                                  pd.read_parquet(tmp_path / "ref" / "features.parquet"))
    for name in ("levels.json", "frames/index.parquet"):
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "ref" / name).read_bytes()
    resumed, reference = (load_frames(tmp_path / run / "frames") for run in ("out", "ref"))
    assert resumed.keys() == reference.keys()
    assert all(np.array_equal(resumed[u], reference[u]) for u in reference)


@pytest.mark.slow
def test_killed_distill_resumes_from_the_cache_to_the_same_rationales(tmp_path):
    manifest, features = write_inputs(tmp_path, n=72)
    stub = StubChatServer()
    stub.start()
    try:
        def params(name: str) -> Path:
            path = tmp_path / f"{name}.yaml"
            path.write_text(yaml.safe_dump({"distill": {
                "features": str(features), "manifest": str(manifest),
                "out": str(tmp_path / name), "backend": "openai", "retries": 0,
                "cache": str(tmp_path / f"{name}.jsonl"),
                "teacher": {"openai_base_url": stub.base_url, "openai_concurrency": 1}}}))
            return path

        stub.delay_s = 0.1
        cache = tmp_path / "killed.jsonl"
        kill_when(cli(params("killed"), "distill"),
                  lambda: cache.exists() and len(cache.read_text().splitlines()) >= 32)
        cached = len(cache.read_text().splitlines())
        assert 32 <= cached < 70, "the kill should land between batches"
        assert not (tmp_path / "killed" / "rationales.jsonl").exists()
        calls = stub.calls
        stub.delay_s = 0.0
        rerun(cli(params("killed"), "distill"), tmp_path / "killed")
        assert stub.calls - calls == 70 - cached  # only what the cache lacked
        run_stats = json.loads((tmp_path / "killed.run.json").read_text())
        assert run_stats["cache_hits"] == cached
        run_distill(load_params(params("reference")), features, manifest, None,
                    tmp_path / "reference")
        assert (tmp_path / "killed" / "rationales.jsonl").read_text() == \
            (tmp_path / "reference" / "rationales.jsonl").read_text()
    finally:
        stub.stop()


MODEL_FILES = ("adapter_model.safetensors", "audio.safetensors",
               "encoder_classifier.safetensors")


@pytest.mark.slow
def test_killed_sft_resumes_from_its_last_checkpoint_to_the_same_weights(pipeline, tmp_path):
    from components.speechlm.train import checkpoint_folder, last_checkpoint, train_sft

    root, *_, tiny = pipeline
    params = sft_params(root, tiny)
    params.sft.max_steps, params.sft.save_steps, params.sft.batch_size = 2, 1, 2
    params.sft.eval_clips, params.sft.max_target_words = 2, 8
    params.sft.checkpoint_dir = str(tmp_path / "checkpoints")
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(as_dict(params)))
    out = tmp_path / "resumed"
    cmd = cli(path, "sft", "--out", str(out))
    folder = checkpoint_folder(params)
    kill_when(cmd, lambda: (folder / "checkpoint-1" / "trainer_state.json").exists(), 300)
    step = int(last_checkpoint(folder).name.rpartition("-")[2])
    assert step in (1, 2) and not (out / "eval.json").exists()
    printed = rerun(cmd, out)
    assert f"sft: resuming from {folder / f'checkpoint-{step}'}" in printed
    assert "encoder pretraining epoch" not in printed  # the warm-up is not redone either
    report = json.loads((out / "eval.json").read_text())
    assert report["resumed_at_step"] == step and report["steps"] == 2
    assert "pretrain_dev_accuracy" in report and not folder.exists()

    params.sft.checkpoint_dir = str(tmp_path / "uninterrupted-checkpoints")
    reference = train_sft(params, tmp_path / "uninterrupted")
    assert reference["resumed_at_step"] == 0 and reference["steps"] == 2
    for name in MODEL_FILES:
        resumed, uninterrupted = load_file(out / name), load_file(
            tmp_path / "uninterrupted" / name)
        assert resumed.keys() == uninterrupted.keys()
        for key, tensor in uninterrupted.items():
            assert torch.equal(resumed[key], tensor), (name, key)
