"""Behavioural tests of a trained model on RAVDESS actors it did not train on
(`components.evaluate.behaviour`): invariance (48 kHz, stereo, 0.5 s of silence), directional
(a low-arousal clip made 4 semitones higher and 8 dB louder moves mass to high-arousal labels;
the rationale's pitch/loudness words follow the measured change), minimum functionality
(strong-intensity acted clips of each class). Prints each pass rate.

Run: python benchmarks/bench_behaviour.py --model .emoreason/bench_quality/fold0/models/sft
     [--actors 1 2 3 4] [--per-class 4] [--data DIR] [--out FILE]
(fold 0 of bench_quality.py holds out actors 1-4.)
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from components.config import load_params  # noqa: E402
from components.evaluate.behaviour import Clip, run_suite  # noqa: E402
from components.labels import code_map  # noqa: E402
from components.prepare.loaders.ravdess import STATEMENTS  # noqa: E402
from components.serve.predictor import load_predictor  # noqa: E402
from components.serve.rows import predict_rows  # noqa: E402


def ravdess_clips(root: Path, actors: list[int]) -> list[tuple[Path, str, str, str]]:
    """(path, label, intensity, transcript) of the actors' clips (MM-VV-EE-II-SS-RR-AA.wav)."""
    out = []
    for actor in actors:
        for path in sorted((root / f"Actor_{actor:02d}").glob("*.wav")):
            _, _, emotion, intensity, statement, _, _ = path.stem.split("-")
            out.append((path, code_map("ravdess")[emotion], intensity, STATEMENTS[statement]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=Path(os.environ.get(
        "EMOREASON_SHARED_DATA", REPO.parent / "shared" / "data")) / "ravdess-dev")
    parser.add_argument("--actors", type=int, nargs="+", default=[1, 2, 3, 4])
    parser.add_argument("--per-class", type=int, default=4)
    parser.add_argument("--tolerance", type=float, default=0.1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    served = load_params(REPO / "params.yaml").inference  # decode as served
    predictor = load_predictor(args.model, max_new_tokens=64, repeat_block=served.repeat_block,
                               claim_guard=served.claim_guard)
    labels = predictor.labels
    clips = ravdess_clips(args.data, args.actors)
    if not clips:
        raise SystemExit(f"no clips of actors {args.actors} under {args.data}")
    strong = {}
    for path, label, intensity, text in clips:
        if label in labels and (intensity == "02" or label == "neutral"):
            strong.setdefault(label, []).append(Clip(path, label, text))
    # spread over the actors: every actor-th clip of the class
    functionality = [c for label in labels for c in strong.get(label, [])[::len(args.actors)]
                     [:args.per_class]]
    low = [Clip(p, lab, t) for p, lab, i, t in clips if lab in ("neutral", "calm")]
    directional = low[::max(1, len(low) // (2 * args.per_class))][:2 * args.per_class]
    invariance = functionality[::2]

    def predict(paths, transcripts):
        return predict_rows(predictor, paths, transcripts=transcripts)

    start = time.perf_counter()
    result = run_suite(predict, labels, invariance, directional, functionality, args.tolerance)
    print(f"behavioural suite of {args.model} on actors {args.actors} "
          f"({time.perf_counter() - start:.0f} s)")
    print(f"{'test':<24}{'n':>5}{'passed':>8}{'pass rate':>11}")
    for name, entry in result.items():
        rate = "n/a" if entry["pass_rate"] is None else f"{entry['pass_rate']:.3f}"
        print(f"{name:<24}{entry['n']:>5}{entry['passed']:>8}{rate:>11}")
    print("minimum functionality per class: " + ", ".join(
        f"{k} {v:.2f}" for k, v in result["minimum_functionality"]["per_class"].items()))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
        print(f"written {args.out}")


if __name__ == "__main__":
    main()
