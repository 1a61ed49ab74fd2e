"""The `distill` stage: a verified teacher rationale for each training clip, or the reason why not.

For each clip the first backend writes a rationale; a rejected one is retried with a hint that
names the problem; clips still failing go to the next backend of the chain, and are dropped
with the reason when the chain is exhausted. With `star.enabled` the first backend is used
STaR-style instead: it must first work the label out unhinted, and only the failures are
rationalized with the label.
"""
from __future__ import annotations

import json
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from components.config import DistillConfig
from components.distill.cache import GenerationCache
from components.distill.prompts import PromptSpec, load_prompt, render
from components.distill.records import LEVEL_FIELDS, MEASURE_FIELDS, ClipCues, TeacherRequest
from components.distill.verify import Verification, clean_rationale, verify
from components.prepare.schema import read_manifest
from components.run_stats import write_run_stats

BATCH = 32
"""Requests sent to a backend at once (the cache is flushed after each batch)."""
RUN_KEYS = ("seconds", "cache_hits", "backend_stats")
"""Summary entries that depend on the run (time, the cache's state, the endpoint's latency),
not on the inputs: they go to `<out>.run.json`, not into the output's summary.json."""


def load_cues(features: Path, manifest: Path, splits: list[str],
              max_clips: int | None = None) -> list[ClipCues]:
    """Cues of the clips in `splits` that have a consensus label, in manifest order."""
    df, meta = read_manifest(manifest)
    feats = pd.read_parquet(features)
    missing = sorted(set(df["utt_id"]) - set(feats["utt_id"]))
    if missing:
        raise ValueError(f"{features} lacks {len(missing)} manifest clips, e.g. {missing[:3]}")
    # the features' transcript is the reference where there is one, else the ASR's
    rows = df.drop(columns=["transcript"]).merge(
        feats.drop(columns=[c for c in ("speaker", "gender", "split", "corpus")
                            if c in feats.columns]),
        on="utt_id", how="left")
    rows = rows[rows["split"].isin(splits) & (rows["label"] != "")]
    if max_clips is not None:
        rows = rows.head(max_clips)
    cues = []
    for r in rows.to_dict("records"):
        votes = Counter(list(r["annotator_labels"]))
        minority = tuple(lab for lab, _ in votes.most_common() if lab != r["label"])
        cues.append(ClipCues(
            utt_id=r["utt_id"],
            transcript=str(r.get("transcript") or ""),
            label=r["label"], label_set=tuple(meta.labels), minority=minority,
            gender=r["gender"], caption=r["prosody_caption"],
            levels={k: str(r[k]) for k in LEVEL_FIELDS},
            measures={k: float(r[k]) for k in MEASURE_FIELDS
                      if r.get(k) is not None and math.isfinite(float(r[k]))},
        ))
    return cues


@dataclass
class Outcome:
    cues: ClipCues
    rationale: str = ""
    backend: str = ""
    kept: bool = False
    verification: Verification | None = None
    attempts: int = 0
    rationalized: bool = False
    problems: list[str] = field(default_factory=list)

    def record(self) -> dict:
        v = self.verification
        return {
            "utt_id": self.cues.utt_id,
            "label": self.cues.label,
            "rationale": self.rationale,
            "backend": self.backend,
            "kept": self.kept,
            "checks": v.checks if v else {},
            "reason": "" if self.kept else "; ".join(self.problems) or "no rationale",
            "attempts": self.attempts,
            "rationalized": self.rationalized,
            "minority": list(self.cues.minority),
        }


def _attempt(cache: GenerationCache, backend, spec: PromptSpec, outcomes: list[Outcome],
             cfg: DistillConfig, with_label: bool, hints: dict[str, str | None],
             iteration: int, bar: tqdm) -> list[tuple[Outcome, Verification | None]]:
    """One generation + verification for each outcome (in batches, cached)."""
    results = []
    for start in range(0, len(outcomes), BATCH):
        chunk = outcomes[start:start + BATCH]
        requests = [TeacherRequest(o.cues.utt_id, render(spec, o.cues, with_label,
                                                         hints.get(o.cues.utt_id)),
                                   o.cues, with_label, hints.get(o.cues.utt_id), iteration)
                    for o in chunk]
        for outcome, reply in zip(chunk, cache.generate(backend, requests)):
            outcome.attempts += 1
            if reply.text is None:
                outcome.problems = [f"{backend.name}: {reply.error}"]
                results.append((outcome, None))
            else:
                text = clean_rationale(reply.text)
                check = verify(text, outcome.cues, cfg.verify)
                results.append((outcome, check))
                outcome.rationale, outcome.backend = text, backend.name
                outcome.verification, outcome.problems = check, list(check.problems)
            bar.update(1)
    return results


def run_chain(outcomes: list[Outcome], backends: list, cache: GenerationCache,
              spec: PromptSpec, cfg: DistillConfig, bar: tqdm) -> None:
    """Each backend in turn, with retries, on the clips not yet kept."""
    for backend in backends:
        hints: dict[str, str | None] = {}
        for _ in range(1 + cfg.retries):
            pending = [o for o in outcomes if not o.kept]
            if not pending:
                return
            for outcome, check in _attempt(cache, backend, spec, pending, cfg, True, hints, 0,
                                           bar):
                if check is not None and check.passed:
                    outcome.kept = True
                elif check is not None:
                    hints[outcome.cues.utt_id] = check.hint


def run_star(outcomes: list[Outcome], backend, cache: GenerationCache, spec: PromptSpec,
             cfg: DistillConfig, bar: tqdm) -> list[dict]:
    """STaR: unhinted generation kept when it implies the right label; failures rationalized
    with the label. Returns one log row per iteration."""
    from sklearn.metrics import cohen_kappa_score

    log = []
    for iteration in range(1, cfg.star.iterations + 1):
        pending = [o for o in outcomes if not o.kept]
        if not pending:
            break
        unhinted = _attempt(cache, backend, spec, pending, cfg, False, {}, iteration, bar)
        gold = [o.cues.label for o, _ in unhinted]
        predicted = [(c.checks.get("implied_label") if c else None) or "none"
                     for _, c in unhinted]
        for outcome, check in unhinted:
            outcome.kept = bool(check and check.passed)
        failed = [o for o in pending if not o.kept]
        rationalized = _attempt(cache, backend, spec, failed, cfg, True, {}, iteration, bar)
        for outcome, check in rationalized:
            outcome.kept = outcome.rationalized = bool(check and check.passed)
        accuracy = float(np.mean([p == g for p, g in zip(predicted, gold)])) if gold else 0.0
        majority = Counter(gold).most_common(1)[0][1] / len(gold) if gold else 0.0
        kappa = float(cohen_kappa_score(gold, predicted)) if len(set(gold + predicted)) > 1 \
            else 0.0
        entry = {
            "iteration": iteration,
            "clips": len(pending),
            "unhinted_accuracy": accuracy,
            "majority_rate": majority,
            "kappa": kappa,
            "keep_rate": sum(o.kept for o in pending) / len(pending),
            "rationalized_share": sum(o.rationalized for o in pending) / len(pending),
            "too_weak": bool(kappa <= 0.0 or accuracy <= majority),
        }
        log.append(entry)
        if entry["too_weak"]:
            print(f"distill: STaR iteration {iteration}: the unhinted teacher is no better than "
                  f"chance (kappa {kappa:.3f}, accuracy {accuracy:.3f} vs majority "
                  f"{majority:.3f}); bootstrapping cannot improve on such a start, and the kept "
                  "rationales come from rationalization")
    return log


CHECKS = ("grounding", "leakage", "consistency", "length")


def failure_kinds(outcome: Outcome) -> list[str]:
    """Which checks a dropped clip's last rationale failed (or that no text came back)."""
    if outcome.verification is None:
        return ["no text from the teacher"]
    return [name for name in CHECKS if not outcome.verification.checks.get(f"{name}_ok", True)]


def distill(cues: list[ClipCues], cfg: DistillConfig, backends: list,
            cache: GenerationCache) -> tuple[list[dict], dict]:
    """(one record per clip, summary) for the backend chain `backends`."""
    spec = load_prompt(cfg.prompt_version)
    outcomes = [Outcome(c) for c in cues]
    start = time.perf_counter()
    with tqdm(desc="rationales", unit="gen") as bar:
        star_log = run_star(outcomes, backends[0], cache, spec, cfg, bar) \
            if cfg.star.enabled else []
        run_chain(outcomes, backends[1:] if cfg.star.enabled else backends, cache, spec, cfg,
                  bar)
        generations = bar.n
    elapsed = time.perf_counter() - start
    records = [o.record() for o in outcomes]
    kept = [r for r in records if r["kept"]]
    reasons = Counter(reason for o in outcomes if not o.kept for reason in failure_kinds(o))
    summary = {
        "clips": len(records),
        "kept": len(kept),
        "keep_rate": len(kept) / len(records) if records else 0.0,
        "kept_by_backend": dict(Counter(r["backend"] for r in kept)),
        "failure_reasons": dict(reasons.most_common()),
        "generations": generations,
        "cache_hits": cache.hits,
        "seconds": round(elapsed, 2),
        "mean_grounding": float(np.mean([r["checks"].get("grounding", 0.0) for r in kept]))
        if kept else 0.0,
        "star": star_log,
    }
    return records, summary


def read_records(path: Path | str) -> list[dict]:
    """The records of a rationales.jsonl; a clear error when it is missing."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"rationales not found: {path}")
    with path.open() as fh:
        return [json.loads(line) for line in fh if line.strip()]


def write_records(records: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        for record in records:
            fh.write(json.dumps(record, sort_keys=True) + "\n")


def run_distill(params, features: Path, manifest: Path, backend: str | None,
                out: Path) -> dict:
    """Write out/rationales.jsonl and out/summary.json, the run's time, cache hits and teacher
    calls to `<out>.run.json` (components.run_stats); log keep rate, failure reasons and a
    sample of rationales to MLflow."""
    import mlflow

    from components.config import as_dict
    from components.distill.backends import make_backend
    from components.tracking import stage_run

    cfg = params.distill
    cfg.backend = backend or cfg.backend
    chain = [cfg.backend] + [b for b in cfg.fallback if b != cfg.backend]
    cues = load_cues(features, manifest, cfg.splits, cfg.max_clips)
    if not cues:
        raise ValueError(f"no clip of splits {cfg.splits} has a consensus label in {manifest}")
    with stage_run("distill", params.tracking, {"distill": as_dict(cfg)}):
        backends = [make_backend(name, cfg.teacher, params.base.seed) for name in chain]
        records, summary = distill(cues, cfg, backends, GenerationCache(cfg.cache))
        summary["chain"] = chain
        summary["backend_stats"] = {b.name: b.stats.as_dict() for b in backends
                                    if hasattr(b, "stats")}
        write_records(records, out / "rationales.jsonl")
        run = {key: summary.pop(key) for key in RUN_KEYS}
        (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
        write_run_stats(out, run)
        summary |= run
        mlflow.log_metrics({"keep_rate": summary["keep_rate"], "kept": summary["kept"],
                            "clips": summary["clips"],
                            "mean_grounding": summary["mean_grounding"],
                            "seconds": summary["seconds"]})
        for row in summary["star"]:
            mlflow.log_metrics({f"star_{k}": float(v) for k, v in row.items()
                                if k != "iteration"}, step=row["iteration"])
        mlflow.log_dict(summary, "distill_summary.json")
        sample = [r for r in records if r["kept"]][:20] + [r for r in records
                                                            if not r["kept"]][:10]
        mlflow.log_table({k: [str(r[k]) for r in sample]
                          for k in ("utt_id", "label", "backend", "kept", "rationale", "reason")},
                         "rationale_samples.json")
    print(f"distill: kept {summary['kept']}/{summary['clips']} "
          f"({summary['keep_rate']:.1%}) by {summary['kept_by_backend']}; "
          f"dropped: {summary['failure_reasons']}; {summary['seconds']:.1f} s, "
          f"{summary['cache_hits']} from the cache")
    return summary
