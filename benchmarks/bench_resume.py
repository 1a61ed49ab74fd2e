"""Crash and resume under `dvc repro`: SIGKILL in the middle of `features`, `distill` and
`sft`, `dvc repro` again, and check that finished work is reused and the outputs equal those
of a run that was never interrupted.

Runs on a copy of the project (its tracked and untracked, not ignored, files) in a temporary
folder, on a small demo corpus, so the project's data, models, caches and MLflow store are
left alone. Per stage it prints what the kill left (cached clips, cached generations, the last
complete checkpoint), what the re-run reused, and whether the outputs match a clean
`dvc repro -f` of the same stage with its caches removed.
Run: python benchmarks/bench_resume.py [--clips 40] [--sft-steps 8] [--stages sft] [--keep]
"""
import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
CACHES = {"features": ".emoreason/cache/features", "distill": ".emoreason/cache/distill",
          "sft": ".emoreason/checkpoints/sft"}
OUTPUTS = {"features": ["data/features/features.parquet", "data/features/levels.json",
                        "data/features/frames"],
           "distill": ["data/distill/rationales.jsonl"],
           "sft": ["models/sft/adapter_model.safetensors", "models/sft/audio.safetensors",
                   "models/sft/encoder_classifier.safetensors"]}


def copy_project(dest: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.splitlines()
    for name in files:
        if (REPO / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost",
                 "commit", "-qm", "copy"]):
        subprocess.run(cmd, cwd=dest, check=True)


def repro(work: Path, env: dict, *args: str) -> float:
    start = time.perf_counter()
    subprocess.run(["dvc", "repro", *args], cwd=work, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def kill_during(work: Path, env: dict, stage: str, ready) -> float:
    """`dvc repro -s <stage>` killed (its whole process group) once `ready()`; seconds run."""
    start = time.perf_counter()
    proc = subprocess.Popen(["dvc", "repro", "-s", stage], cwd=work, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    while not ready():
        if proc.poll() is not None:
            raise SystemExit(f"{stage} finished before the kill: use more clips or steps")
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return time.perf_counter() - start


def contents(work: Path, names: list[str]) -> dict[str, object]:
    """What each output holds, read as data rather than bytes: tables as data frames, tensor
    files as arrays by name, JSON as objects (a safetensors or parquet writer may order its
    metadata differently from one process to the next while the values are the same)."""
    import pandas as pd
    from safetensors.numpy import load_file

    out: dict[str, object] = {}
    for name in names:
        path = work / name
        for f in sorted(path.rglob("*")) if path.is_dir() else [path]:
            if not f.is_file():
                continue
            key = str(f.relative_to(work))
            if f.suffix == ".parquet":
                out[key] = pd.read_parquet(f)
            elif f.suffix == ".safetensors":
                out[key] = load_file(f)
            elif f.suffix == ".json":
                out[key] = json.loads(f.read_text())
            else:
                out[key] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def differences(a: dict[str, object], b: dict[str, object]) -> dict[str, str]:
    """Per file that differs, what differs (missing, columns, tensors with the largest gap)."""
    import numpy as np
    import pandas as pd

    found = {}
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if x is None or y is None:
            found[key] = "only in one run"
        elif isinstance(x, pd.DataFrame):
            if not x.equals(y):
                cols = [c for c in x.columns if c not in y or not x[c].equals(y[c])]
                found[key] = f"columns differ: {cols[:8]}" if cols else "index or order differs"
        elif isinstance(x, dict) and x and all(isinstance(v, np.ndarray) for v in x.values()):
            gaps = {n: float(np.abs(x[n].astype("float64") - y[n].astype("float64")).max())
                    for n in x if n in y and x[n].shape == y[n].shape}
            gaps = {n: g for n, g in gaps.items() if g > 0}
            if set(x) != set(y) or gaps:
                worst = sorted(gaps.items(), key=lambda kv: -kv[1])[:3]
                found[key] = f"{len(gaps)}/{len(x)} tensors differ, largest: {worst}"
        elif x != y:
            found[key] = "differs"
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clips", type=int, default=40)
    parser.add_argument("--sft-steps", type=int, default=8)
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--stages", nargs="+", default=["features", "distill", "sft"],
                        choices=["features", "distill", "sft"])
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="emoreason-resume-"))
    copy_project(work)
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["prepare"]["demo"]["n_clips"] = args.clips
    params["distill"].update(backend="hf", fallback=["template"])
    params["sft"].update(max_steps=args.sft_steps, save_steps=2, encoder_pretrain_epochs=2,
                         eval_clips=8)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PYTHONPATH": str(work),
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])}
    cache = work / CACHES["features"]

    def rows() -> list[Path]:
        return [p for p in cache.rglob("*.json") if not p.name.endswith(".f0.json")]

    ready = {
        "features": lambda: len(rows()) >= args.clips // 3,
        "distill": lambda: (work / CACHES["distill"] / "rationales.jsonl").exists(),
        "sft": lambda: any((work / CACHES["sft"]).glob("*/checkpoint-*/trainer_state.json")),
    }
    report = {}
    for stage, upstream in (("features", "manifest_gate"), ("distill", "features_gate"),
                            ("sft", "rationales_gate")):
        if stage not in args.stages:
            continue
        repro(work, env, upstream)
        killed_after = kill_during(work, env, stage, ready[stage])
        left = {"features": lambda: len(rows()),
                "distill": lambda: len((work / CACHES["distill"] / "rationales.jsonl")
                                       .read_text().splitlines()),
                "sft": lambda: sorted(p.parent.name for p in (work / CACHES["sft"]).glob(
                    "*/checkpoint-*/trainer_state.json"))}[stage]()
        finished = {p: p.stat().st_mtime_ns for p in rows()} if stage == "features" else {}
        resumed_s = repro(work, env, "-s", stage)
        entry = {"killed_after_s": round(killed_after, 1), "left_by_the_kill": left,
                 "resume_s": round(resumed_s, 1)}
        if stage == "features":
            entry["clips_reused"] = sum(p.stat().st_mtime_ns == t for p, t in finished.items())
        if stage == "distill":
            entry["cache_hits"] = json.loads(
                (work / "data/distill.run.json").read_text())["cache_hits"]
        if stage == "sft":
            entry["resumed_at_step"] = json.loads(
                (work / "models/sft/eval.json").read_text())["resumed_at_step"]
        resumed = contents(work, OUTPUTS[stage])
        shutil.rmtree(work / CACHES[stage], ignore_errors=True)
        entry["clean_s"] = round(repro(work, env, "-f", "-s", stage), 1)
        diff = differences(resumed, contents(work, OUTPUTS[stage]))
        entry["outputs_equal"] = not diff
        if diff:
            entry["differences"] = diff
        report[stage] = entry
        print(f"{stage}: {json.dumps(entry)}", flush=True)
    print(json.dumps(report, indent=2))
    if args.keep:
        print(f"work folder: {work}")
    else:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
