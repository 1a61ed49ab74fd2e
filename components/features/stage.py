"""The `features` stage: a gated manifest -> features.parquet, levels.json and frame shards.

Per-clip work runs in parallel (a process pool, or Ray Data when `features.engine: ray`) over
the same functions, with a progress bar; finished clips come from the content-hash cache.
"""
from __future__ import annotations

import json
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from components.config import FeaturesConfig, Params, as_dict
from components.features.captions import prosody_caption
from components.features.extract import ClipJob, clip_f0_median, extract_clip
from components.features.egemaps import zscore
from components.features.frames import FRAME_FEATURE_NAMES, write_shard
from components.features.levels import apply_levels, fit_levels, load_levels, save_levels
from components.paths import UnsafePathError, resolve_audio_path
from components.prepare.schema import read_manifest
from components.run_stats import write_run_stats

CARRIED = ("corpus", "speaker", "gender", "split")
ENGINES = ("process", "ray")


def _ray_map(fn, jobs: list[ClipJob], cfg: FeaturesConfig, desc: str) -> list[dict]:
    """The same per-clip function as Ray Data tasks; a local Ray with `workers` CPUs unless
    `ray_address` names a cluster."""
    import ray

    started = not ray.is_initialized()
    if started:
        kwargs = {"address": cfg.ray_address} if cfg.ray_address else {"num_cpus": cfg.workers}
        ray.init(include_dashboard=False, log_to_driver=False, **kwargs)
    try:
        ds = ray.data.from_items([asdict(j) for j in jobs], override_num_blocks=max(1, len(jobs)))
        ds = ds.map(lambda item: fn(ClipJob(**item)), num_cpus=1)
        print(f"{desc}: {len(jobs)} clips on Ray")
        return ds.take_all()
    finally:
        if started:
            ray.shutdown()


def run_parallel(fn, jobs: list[ClipJob], cfg: FeaturesConfig, desc: str) -> list[dict]:
    """fn over jobs (results in job order) with the configured engine and a progress bar."""
    if cfg.engine not in ENGINES:
        raise ValueError(f"features.engine must be one of {ENGINES}, got {cfg.engine!r}")
    if cfg.workers < 1:
        raise ValueError("features.workers must be at least 1")
    if cfg.engine == "ray":
        by_id = {row["utt_id"]: row for row in _ray_map(fn, jobs, cfg, desc)}
        return [by_id[j.utt_id] for j in jobs]
    if cfg.workers == 1:
        return [fn(j) for j in tqdm(jobs, desc=desc, unit="clip")]
    results: dict[int, dict] = {}
    with ProcessPoolExecutor(max_workers=cfg.workers) as pool:
        futures = {pool.submit(fn, job): i for i, job in enumerate(jobs)}
        for future in tqdm(as_completed(futures), total=len(jobs), desc=desc, unit="clip"):
            results[futures[future]] = future.result()
    return [results[i] for i in range(len(jobs))]


def _jobs(df: pd.DataFrame, root: Path, cfg: FeaturesConfig) -> list[ClipJob]:
    jobs = []
    for row in df.itertuples(index=False):
        try:
            path = str(resolve_audio_path(row.audio_path, root))
        except UnsafePathError as exc:
            raise ValueError(f"{row.utt_id}: {exc}") from None
        jobs.append(ClipJob(
            utt_id=row.utt_id, audio=path, reference=row.transcript or "", asr=cfg.asr,
            asr_on_reference=cfg.asr_on_reference, frames=cfg.frames,
            speech_embedding=cfg.speech_embedding, voice_quality=cfg.voice_quality,
            cache_dir=str(Path(cfg.cache_dir).resolve()),
        ))
    return jobs


def speaker_medians(df: pd.DataFrame, medians: list[dict]) -> dict[str, float | None]:
    """Median of the clip F0 medians per speaker, snapped to a semitone grid (None for a
    speaker with no voiced clip).

    The median only centres the second F0 pass (an octave window and the octave repair), so a
    semitone is well within its tolerance; snapping keeps a speaker's cached clips valid when
    a few clips are added, unless the speaker's median moves by a semitone or more.
    """
    f0 = pd.Series({m["utt_id"]: m["f0_median_hz"] for m in medians})
    per = df.assign(f0=df["utt_id"].map(f0)).groupby("speaker")["f0"].median()
    snapped = {}
    for spk, value in per.items():
        snapped[spk] = (float(100.0 * 2 ** (round(12 * np.log2(value / 100.0)) / 12))
                        if np.isfinite(value) else None)
    return snapped


def _write_frames(feats: pd.DataFrame, out: Path, shard_size: int) -> pd.DataFrame:
    """Frame shards of `shard_size` clips plus an index (utt_id, shard, n_frames)."""
    frames_dir = out / "frames"
    frames_dir.mkdir(parents=True, exist_ok=True)
    index, batch, n_shards = [], [], 0
    usable = feats[feats["frames_path"] != ""]
    for i, row in enumerate(usable.itertuples(index=False)):
        batch.append((row.utt_id, np.load(row.frames_path)))
        if len(batch) == shard_size or i == len(usable) - 1:
            name = f"shard-{n_shards:05d}.safetensors"
            write_shard(frames_dir / name, batch, FRAME_FEATURE_NAMES)
            index += [{"utt_id": u, "shard": name, "n_frames": int(a.shape[0])} for u, a in batch]
            batch, n_shards = [], n_shards + 1
    table = pd.DataFrame(index, columns=["utt_id", "shard", "n_frames"])
    table.to_parquet(frames_dir / "index.parquet", index=False)
    return table


def normalise_egemaps(feats: pd.DataFrame, min_speaker_clips: int = 5,
                      column: str = "egemaps") -> pd.Series:
    """eGeMAPS (or another vector `column`) z-normalised over each speaker's clips (corpus x
    gender for speakers with fewer than `min_speaker_clips`): voices differ more between
    speakers than emotions do."""
    x = np.array(feats[column].tolist(), dtype=np.float64)
    counts = feats["speaker"].map(feats["speaker"].value_counts())
    group = np.where(counts >= min_speaker_clips, "spk:" + feats["speaker"].astype(str),
                     "cg:" + feats["corpus"].astype(str) + "/" + feats["gender"].astype(str))
    out = np.full_like(x, np.nan)
    for key in np.unique(group):
        rows = group == key
        mean = np.nanmean(x[rows], axis=0)
        std = np.nanstd(x[rows], axis=0)
        out[rows] = zscore(x[rows], mean, std)
    return pd.Series([list(map(float, r)) for r in out.astype(np.float32)], index=feats.index)


def build_features(df: pd.DataFrame, root: Path, cfg: FeaturesConfig, out: Path,
                   levels: dict | None = None) -> tuple[pd.DataFrame, dict]:
    """(features frame, levels used) for a manifest; writes nothing but the frame shards."""
    jobs = _jobs(df, root, cfg)
    medians = run_parallel(clip_f0_median, jobs, cfg, "F0 first pass")
    per_speaker = speaker_medians(df, medians)
    speakers = dict(zip(df["utt_id"], df["speaker"]))
    jobs = [replace(j, speaker_f0_median_hz=per_speaker[speakers[j.utt_id]]) for j in jobs]
    rows = run_parallel(extract_clip, jobs, cfg, "features")
    feats = pd.DataFrame(rows)
    feats = df[["utt_id", *CARRIED]].merge(feats, on="utt_id", how="left", validate="1:1")
    feats["speaker_f0_median_hz"] = feats["speaker"].map(per_speaker).astype(float)
    levels = levels or fit_levels(feats)
    feats = apply_levels(feats, levels)
    feats["prosody_caption"] = [
        prosody_caption({**r, "contour": r["intonation"]}) for r in feats.to_dict("records")
    ]
    feats["egemaps_spknorm"] = normalise_egemaps(feats)
    if "speech_embedding" in feats:
        feats["speech_embedding_spknorm"] = normalise_egemaps(feats, column="speech_embedding")
    if cfg.frames:
        _write_frames(feats, out, cfg.shard_size)
    return feats.drop(columns=["frames_path", "cache_key"]), levels


def run_features(params: Params, manifest: Path, out: Path, levels_path: Path | None) -> dict:
    """Write out/features.parquet, out/levels.json, out/frames/ and out/summary.json, and the
    run's timing to `<out>.run.json` (components.run_stats)."""
    import mlflow

    from components.tracking import stage_run

    cfg = params.features
    df, meta = read_manifest(manifest)
    with stage_run("features", params.tracking, {"features": as_dict(cfg)}):
        start = time.perf_counter()
        levels = load_levels(levels_path) if levels_path else None
        out.mkdir(parents=True, exist_ok=True)
        for stale in (out / "frames").glob("shard-*.safetensors"):
            stale.unlink()
        feats, levels = build_features(df, Path(meta.data_root), cfg, out, levels)
        elapsed = time.perf_counter() - start
        feats.to_parquet(out / "features.parquet", index=False)
        save_levels(out / "levels.json", levels)
        flags = Counter(f.split(":")[0].split(" ")[0] for fl in feats["flags"] for f in fl)
        audio_s = float(np.nansum(feats["duration_s"]))
        timing = {"seconds": round(elapsed, 2),
                  "real_time_factor": round(elapsed / audio_s, 4) if audio_s else None}
        summary = {
            "clips": len(feats),
            "audio_seconds": round(audio_s, 1),
            "levels_fitted": levels_path is None,
            "flags": dict(sorted(flags.items())),
            "intonation": feats["intonation"].value_counts().to_dict(),
            "transcript_source": feats["transcript_source"].value_counts().to_dict(),
            "mean_asr_wer": float(np.nanmean(feats["asr_wer"])) if feats["asr_wer"].notna().any()
            else None,
        }
        (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
        write_run_stats(out, timing)
        mlflow.log_metrics({"clips": len(feats), "seconds": elapsed,
                            "real_time_factor": timing["real_time_factor"] or 0.0})
        mlflow.log_dict({**summary, **timing}, "features_summary.json")
        mlflow.log_artifact(str(out / "levels.json"))
    print(f"features: {len(feats)} clips in {elapsed:.1f} s "
          f"({audio_s / max(elapsed, 1e-9):.1f}x real time); flags {summary['flags']}")
    return {**summary, **timing}
