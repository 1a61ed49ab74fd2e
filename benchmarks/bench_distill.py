"""Distill benchmark: rationales per minute per teacher backend, and the verification cost.

Uses the demo pipeline's outputs (run `make demo` first): data/features/features.parquet and
the features gate's data/features_gated/manifest.parquet. The hf backend runs the bundled SmolLM2 at batch 1 and batched.
Run: python benchmarks/bench_distill.py [--clips 16] [--skip-hf]
"""
import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from components.config import DistillConfig, TeacherConfig, VerifyConfig  # noqa: E402
from components.distill.backends import make_backend  # noqa: E402
from components.distill.prompts import load_prompt, render  # noqa: E402
from components.distill.records import TeacherRequest  # noqa: E402
from components.distill.stage import load_cues  # noqa: E402
from components.distill.verify import clean_rationale, verify  # noqa: E402


def rate(backend, requests, cues_by_id, verify_cfg) -> tuple[float, float]:
    """(rationales per minute, share that passes verification)."""
    start = time.perf_counter()
    replies = backend.generate(requests)
    took = time.perf_counter() - start
    passed = sum(verify(clean_rationale(r.text), cues_by_id[q.utt_id], verify_cfg).passed
                 for q, r in zip(requests, replies) if r.text)
    return 60 * len(requests) / took, passed / len(requests)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--skip-hf", action="store_true")
    args = parser.parse_args()
    features = REPO / "data" / "features" / "features.parquet"
    manifest = REPO / DistillConfig().manifest
    if not features.exists():
        sys.exit("run `make demo` first: data/features/features.parquet is missing")
    cfg = DistillConfig()
    cues = load_cues(features, manifest, ["train"], args.clips)
    spec = load_prompt(cfg.prompt_version)
    requests = [TeacherRequest(c.utt_id, render(spec, c), c) for c in cues]
    by_id = {c.utt_id: c for c in cues}
    print(f"{len(requests)} demo training clips, prompt {spec.version}")

    template = make_backend("template", cfg.teacher, 0)
    per_min, passed = rate(template, requests * 20, by_id, VerifyConfig())
    print(f"template: {per_min:,.0f} rationales/min, {passed:.0%} pass verification")

    texts = [r.text for r in template.generate(requests)]
    start = time.perf_counter()
    for _ in range(50):
        for cue, text in zip(cues, texts):
            verify(text, cue, VerifyConfig())
    cost = (time.perf_counter() - start) / (50 * len(texts))
    print(f"verification: {cost * 1e6:.0f} us per rationale")

    if not args.skip_hf:
        for batch in (1, 8):
            teacher_cfg = replace(TeacherConfig(), hf_batch_size=batch)
            hf = make_backend("hf", teacher_cfg, 0)
            per_min, passed = rate(hf, requests, by_id, VerifyConfig())
            print(f"hf (bundled SmolLM2-135M, batch {batch}, max_new_tokens "
                  f"{teacher_cfg.max_new_tokens}): {per_min:.1f} rationales/min, "
                  f"{passed:.0%} pass verification")


if __name__ == "__main__":
    main()
