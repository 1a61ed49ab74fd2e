"""Features benchmark: real-time factor per core of each extractor, each transcriber's word
error rate against the corpus's own transcripts, and the whole stage's speed-up from 1 to 2
worker processes.

Clips: RAVDESS dev when present ($EMOREASON_SHARED_DATA/ravdess-dev), else a generated demo
corpus. RTF = processing seconds / audio seconds (lower is faster); "x real time" = 1 / RTF.
Run: python benchmarks/bench_features.py [--clips 40]
"""
import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{tempfile.gettempdir()}/bench-mlflow.db")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from components.audio_io import read_audio  # noqa: E402
from components.config import DemoConfig, FeaturesConfig, SplitConfig  # noqa: E402
from components.features.asr import make_transcriber, word_error_rate  # noqa: E402
from components.features.egemaps import egemaps_functionals  # noqa: E402
from components.features.frames import frame_features  # noqa: E402
from components.features.prosody import f0_track, measure_prosody  # noqa: E402
from components.features.stage import build_features  # noqa: E402
from components.prepare.manifest import build_manifest  # noqa: E402


def corpus(n: int, tmp: Path) -> tuple[pd.DataFrame, Path, str]:
    ravdess = Path(os.environ.get("EMOREASON_SHARED_DATA", REPO.parent / "shared" / "data"))
    ravdess = ravdess / "ravdess-dev"
    if ravdess.is_dir():
        from components.prepare.loaders import load_corpus

        loaded, root, name, labels = load_corpus("ravdess", ravdess), ravdess, "ravdess", None
    else:
        from components.prepare.demo import generate_demo_corpus

        root, name = tmp / "audio", "demo"
        labels = DemoConfig().emotions
        loaded = generate_demo_corpus(root, DemoConfig(n_clips=n), 1, progress=False)
    df, _, _ = build_manifest(loaded, name, root, None, {}, 0.0, SplitConfig(), 1, labels)
    step = max(1, len(df) // n)
    return df.iloc[::step].head(n).reset_index(drop=True), root, name


def timed(fn, clips) -> float:
    start = time.perf_counter()
    for clip in clips:
        fn(clip)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clips", type=int, default=40)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        df, root, name = corpus(args.clips, tmp)
        audio = [read_audio(root / p, 16000)[0] for p in df["audio_path"]]
        texts = list(df["transcript"])
        seconds = sum(len(a) for a in audio) / 16000
        print(f"{len(audio)} {name} clips, {seconds:.1f} s of audio; one process")
        tracks = [f0_track(a, 16000) for a in audio]
        asr = {spec: make_transcriber(spec) for spec in ("moonshine", "pocketsphinx")}
        extractors = {
            "prosody (F0 two passes + measures)": lambda i: measure_prosody(
                audio[i], 16000, texts[i], track=f0_track(audio[i], 16000)),
            "eGeMAPS (openSMILE)": lambda i: egemaps_functionals(audio[i], 16000),
            "ASR (Moonshine, the default)": lambda i: asr["moonshine"].transcribe(audio[i]),
            "ASR (PocketSphinx)": lambda i: asr["pocketsphinx"].transcribe(audio[i]),
            "encoder inputs (given the F0 track)": lambda i: frame_features(audio[i], tracks[i]),
        }
        for label, fn in extractors.items():
            took = timed(fn, range(len(audio)))
            print(f"  {label:38s} RTF {took / seconds:.4f}  = {seconds / took:7.1f}x real time")
        if all(texts):  # word error rate against the corpus's own transcripts
            for spec, transcriber in asr.items():
                wer = np.mean([word_error_rate(t, transcriber.transcribe(a)[0])
                               for t, a in zip(texts, audio)])
                print(f"  ASR word error rate, {spec:12s} {wer:.3f}")
        stage = {}
        for workers in (1, 2):
            cfg = FeaturesConfig(workers=workers, cache_dir=str(tmp / f"cache{workers}"),
                                 frames=True)
            start = time.perf_counter()
            build_features(df, root, cfg, tmp / f"out{workers}")
            stage[workers] = time.perf_counter() - start
            print(f"whole stage, {workers} worker(s), no ASR (reference transcripts): "
                  f"{stage[workers]:.1f} s = {seconds / stage[workers]:.1f}x real time")
        print(f"speed-up 1 -> 2 workers: {stage[1] / stage[2]:.2f}x")
        start = time.perf_counter()
        build_features(df, root, FeaturesConfig(workers=2, cache_dir=str(tmp / "cache2")),
                       tmp / "out-cached")
        print(f"re-run from the cache: {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()
