"""Prepare-stage benchmark: demo-corpus generation speed and manifest-gate time.

Prints clips per second and the real-time factor of synthesis, and the gate's wall time on the
demo corpus and, when present, on RAVDESS dev ($EMOREASON_SHARED_DATA/ravdess-dev).
Run: python benchmarks/bench_prepare.py [--clips 300]
"""
import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from components.config import DemoConfig, ManifestGateConfig, SplitConfig  # noqa: E402
from components.gates.manifest_gate import run_manifest_gate  # noqa: E402
from components.prepare.demo import generate_demo_corpus  # noqa: E402
from components.prepare.loaders import load_corpus  # noqa: E402
from components.prepare.manifest import build_manifest  # noqa: E402
from components.prepare.schema import write_manifest  # noqa: E402


def gate_time(loaded, corpus, root, work: Path, labels) -> tuple[float, float, int]:
    """(manifest build seconds, gate seconds, rows)."""
    t0 = time.perf_counter()
    df, meta, _ = build_manifest(loaded, corpus, root, None, {}, 0.0, SplitConfig(), 1234, labels)
    write_manifest(df, meta, work / "manifest.parquet")
    t1 = time.perf_counter()
    cfg = ManifestGateConfig(manifest=str(work / "manifest.parquet"), out=str(work / "gated"),
                             report_dir=str(work / "report"))
    result = run_manifest_gate(work / "manifest.parquet", cfg)
    t2 = time.perf_counter()
    assert result.success, result.failed
    return t1 - t0, t2 - t1, len(df)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clips", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cfg = DemoConfig(n_clips=args.clips)
        t0 = time.perf_counter()
        loaded = generate_demo_corpus(tmp / "audio", cfg, seed=1234, progress=False)
        gen = time.perf_counter() - t0
        import soundfile as sf

        audio_s = sum(sf.info(str(tmp / "audio" / u.audio_path)).duration for u in loaded.utterances)
        print(f"demo generation: {len(loaded.utterances)} clips in {gen:.2f} s = "
              f"{len(loaded.utterances) / gen:.1f} clips/s; {audio_s:.0f} s of audio, "
              f"{audio_s / gen:.0f}x real time")
        t0 = time.perf_counter()
        generate_demo_corpus(tmp / "audio", cfg, seed=1234, progress=False)
        print(f"demo generation, cached re-run: {time.perf_counter() - t0:.3f} s")
        build, gate, rows = gate_time(loaded, "demo", tmp / "audio", tmp / "demo", cfg.emotions)
        print(f"demo manifest: build {build:.2f} s; gate {gate:.2f} s for {rows} clips "
              f"({rows / gate:.0f} clips/s)")
        ravdess = Path(os.environ.get("EMOREASON_SHARED_DATA", REPO.parent / "shared" / "data"))
        ravdess = ravdess / "ravdess-dev"
        if ravdess.is_dir():
            loaded = load_corpus("ravdess", ravdess)
            build, gate, rows = gate_time(loaded, "ravdess", ravdess, tmp / "ravdess", None)
            print(f"ravdess-dev manifest: build {build:.2f} s; gate {gate:.2f} s for {rows} clips "
                  f"({rows / gate:.0f} clips/s)")
        else:
            print(f"ravdess-dev not found under {ravdess.parent}: skipped")


if __name__ == "__main__":
    main()
