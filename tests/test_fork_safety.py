"""The features stage's process pool after the parent process measured clips itself (as tests
and `emoreason evaluate --model` do): forked workers must not inherit a thread pool or ONNX
Runtime sessions that cannot run in them. Run in a subprocess, so a hang fails on a timeout."""
import subprocess
import sys
import textwrap

from components.config import SplitConfig
from tests.demo_fixture import demo_manifest

SCRIPT = textwrap.dedent("""
    import sys
    from pathlib import Path
    import pandas as pd
    from components.config import FeaturesConfig
    from components.features.extract import ClipJob, extract_clip
    from components.features.stage import run_parallel

    root = Path(sys.argv[1])
    df = pd.read_parquet(root / "manifest.parquet")

    def jobs(cache):
        return [ClipJob(utt_id=r.utt_id, audio=str(root / "audio" / r.audio_path),
                        reference=r.transcript, asr_on_reference=True, frames=False,
                        speech_embedding="moonshine", cache_dir=str(root / cache))
                for r in df.itertuples()]

    parent = [extract_clip(j) for j in jobs("parent")]  # the thread and sessions start here
    pooled = run_parallel(extract_clip, jobs("pool"), FeaturesConfig(workers=2), "features")
    for a, b in zip(parent, pooled):
        assert a["speech_embedding"] == b["speech_embedding"], a["utt_id"]
        assert a["transcript"] == b["transcript"] and a["egemaps"] == b["egemaps"]
    print("same rows", len(pooled))
""")


def test_a_process_pool_after_measuring_in_the_parent_gives_the_same_rows(tmp_path):
    df, _ = demo_manifest(tmp_path, 4, 1, 2, SplitConfig(train=0.5, dev=0.0, test=0.5))
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"same rows {len(df)}" in done.stdout
