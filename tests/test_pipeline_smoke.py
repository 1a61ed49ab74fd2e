"""One small run of the whole pipeline through the Prefect flow, then `dvc repro` again.

It proves the stages fit together: the flow runs every dvc.yaml stage in order, gates publish
their results as Prefect artifacts, MLflow gets one parent with a child per stage, and a second
`dvc repro` has nothing to do.
"""
import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml

from tests.conftest import REPO
from tests.tiny_models import save_tiny_lm

pytestmark = pytest.mark.slow

BIN = str(Path(sys.executable).parent)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A copy of the project with a tiny demo corpus, as its own DVC project."""
    root = tmp_path_factory.mktemp("project")
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(REPO / name, root / name)
    shutil.copytree(REPO / "components", root / "components",
                    ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["prepare"]["demo"].update(n_clips=24, n_speakers=6)
    params["features"]["cache_dir"] = str(root / ".cache")
    params["distill"]["cache"] = str(root / ".cache" / "rationales.jsonl")
    # SFT on a tiny random LM: proves the stage fits, not that it learns (a benchmark does that)
    tiny = str(save_tiny_lm(root / "tiny_lm"))
    params["sft"].update(lm=tiny, max_steps=2, batch_size=4, eval_clips=2, max_target_words=20,
                         encoder_pretrain_epochs=1)
    params["zeroshot"].update(lm=tiny, eval_clips=2, max_new_tokens=8)
    params["rl"].update(num_generations=2, prompts_per_step=2, max_new_tokens=8, max_steps=1,
                        save_steps=1, max_clips=4, checkpoint_dir=str(root / ".checkpoints"))
    params["evaluate"].update(n_boot=100, max_new_tokens=8)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run(["dvc", "init", "--no-scm", "-q"], cwd=root, env=env, check=True)
    return root, env


def test_flow_runs_all_stages_then_dvc_has_nothing_to_do(project, monkeypatch):
    from prefect.client.orchestration import get_client
    from prefect.testing.utilities import prefect_test_harness

    from flows.ser_pipeline import pipeline_stages, ser_pipeline

    root, env = project
    monkeypatch.setenv("PATH", env["PATH"])
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    stages = pipeline_stages(root)
    assert stages[:2] == ["prepare", "manifest_gate"]

    async def artifacts():
        async with get_client() as client:
            return await client.read_artifacts()

    with prefect_test_harness(server_startup_timeout=120):
        done = ser_pipeline(project_dir=str(root))
        published = asyncio.run(artifacts())
    assert done == stages

    assert (root / "models" / "sft" / "task.json").exists()
    assert json.loads((root / "models" / "zeroshot" / "task.json").read_text())["inputs"] == "text"
    manifest = pd.read_parquet(root / "data" / "prepared" / "manifest.parquet")
    gated = pd.read_parquet(root / "data" / "gated" / "manifest.parquet")
    assert len(manifest) == 24 and len(gated) == 24
    assert (root / "reports" / "manifest_gate" / "result.json").exists()
    gate_artifacts = [a for a in published if a.key == "manifest-gate"]
    assert gate_artifacts and "passed" in gate_artifacts[0].data

    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    parents = [r for r in runs if r.data.tags.get("emoreason.kind") == "pipeline"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = {r.data.tags["emoreason.stage"] for r in runs
                if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id}
    assert children == set(stages)

    metrics = json.loads((root / "reports" / "evaluate" / "metrics.json").read_text())
    assert {"majority", "egemaps_lr_speaker", "encoder", "zeroshot", "sft"} <= \
        set(metrics["systems"])
    shown = subprocess.run(["dvc", "metrics", "show", "--json"], cwd=root, env=env,
                           capture_output=True, text=True, check=True).stdout
    assert "annotator_aware_macro_f1" in shown
    registered = mlflow.MlflowClient().get_model_version_by_alias("emoreason", "champion")
    assert registered.tags["emoreason.decision"] == "promoted"  # the first version

    again = subprocess.run(["dvc", "repro"], cwd=root, env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert "didn't change, skipping" in again.stdout or "up to date" in again.stdout
    assert "Running stage" not in again.stdout


def test_a_failing_gate_stops_dvc_with_the_failed_expectation(project):
    root, env = project
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["manifest_gate"]["max_duration_s"] = 0.5  # every demo clip is longer
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    proc = subprocess.run(["dvc", "repro"], cwd=root, env=env, capture_output=True, text=True)
    assert proc.returncode != 0
    assert "duration_s" in proc.stdout + proc.stderr
