"""The manifest gate: decode every clip, quarantine bad clips, and validate the manifest with GX.

A header can look fine while the samples are missing, so every file is decoded. Clips that
cannot be used (unsafe path, missing, undecodable, truncated, empty, silent, or a duration
outside [min_duration_s, max_duration_s]) are quarantined with a reason rather than failing
the pipeline outright: one bad clip is a property of that clip, not of the corpus. The gate
fails only when more than `max_quarantine_share` of the rows are quarantined, or when the
manifest itself breaks its contract (ids, splits, labels, annotator votes).
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import great_expectations as gx
import numpy as np
import pandas as pd
import soundfile as sf
from great_expectations.expectations.row_conditions import Column
from tqdm import tqdm

from components.audio_io import AudioReadError, read_audio
from components.config import ManifestGateConfig
from components.gates.gx_report import (
    GATED_MANIFEST,
    QUARANTINE_FILE,
    GateResult,
    failed_expectations,
    validate_frame,
    write_quarantine_and_gated,
    write_result,
)
from components.labels import NO_AGREEMENT
from components.paths import UnsafePathError, resolve_audio_path
from components.prepare.schema import GENDERS, MANIFEST_COLUMNS, SPLITS, read_manifest

GATE_NAME = "manifest gate"
SUITE_NAME = "manifest"
EXAMPLE_ID_COLUMNS = ("utt_id", "speaker")
"""Columns that identify an example row in the report (the speaker makes split leaks plain)."""

DECODE_WORKERS = 2
SILENCE_PEAK_DBFS = -80.0
"""A clip whose loudest sample is below this carries no speech (digital silence or a hum)."""
DURATION_TOLERANCE_S = 0.05
"""Decoded length may differ this much from the manifest's header duration."""

STRING_COLUMNS = (
    "utt_id", "corpus", "audio_path", "speaker", "gender", "split", "transcript", "label",
    "label_distribution",
)
LIST_COLUMNS = ("annotator_ids", "annotator_labels")
FLOAT_TYPES = ["float64", "float32"]
INT_TYPES = ["int64", "int32", "int16"]
NULLABLE_COLUMNS = ("duration_s",)
"""Columns the manifest contract allows to be null (NaN duration: header unreadable)."""

# libsndfile reads what a truncated WAV/AIFF still holds and notes the shortfall in its log.
_DECLARED_SHORTFALL = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)


def audio_problem(rel_path: Any, root: Path, manifest_duration_s: Any = None) -> str:
    """'' when the clip decodes to audible samples of the expected length, else the reason."""
    if not isinstance(rel_path, str) or not rel_path:
        return "no audio path"
    try:
        path = resolve_audio_path(rel_path, root)
    except UnsafePathError as exc:
        return f"unsafe path: {exc}"
    if not path.is_file():
        return "missing: no such file"
    try:
        samples, sr = read_audio(path, target_sr=None)
    except AudioReadError as exc:
        return f"unreadable: {str(exc).removeprefix(f'{path}: ')}"
    shortfall = _DECLARED_SHORTFALL.search(sf.info(str(path)).extra_info)
    if shortfall:
        declared, present = shortfall.groups()
        return f"truncated: the header declares {declared} data bytes, the file holds {present}"
    duration = len(samples) / sr
    expected = manifest_duration_s if _is_number(manifest_duration_s) else duration
    if abs(duration - expected) > DURATION_TOLERANCE_S:
        return (
            f"truncated or replaced: decodes to {duration:.3f} s,"
            f" the manifest says {manifest_duration_s:.3f} s"
        )
    if float(np.max(np.abs(samples))) < 10 ** (SILENCE_PEAK_DBFS / 20):
        return f"silent: no sample above {SILENCE_PEAK_DBFS:g} dBFS"
    return ""


def duration_problem(duration_s: Any, cfg: ManifestGateConfig) -> str:
    """'' when the header duration is within the gate's bounds (or unknown), else the reason."""
    if not _is_number(duration_s):
        return ""
    if duration_s < cfg.min_duration_s:
        return f"too short: {duration_s:.2f} s, below min_duration_s {cfg.min_duration_s:g} s"
    if duration_s > cfg.max_duration_s:
        return f"too long: {duration_s:.2f} s, above max_duration_s {cfg.max_duration_s:g} s"
    return ""


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.number)) and math.isfinite(value)


def inspect_audio(df: pd.DataFrame, root: Path) -> list[str]:
    """`audio_problem` for every row, decoded by a small thread pool (libsndfile drops the GIL)."""
    jobs = list(zip(df["audio_path"], df["duration_s"]))
    with ThreadPoolExecutor(max_workers=DECODE_WORKERS) as pool:
        results = pool.map(lambda job: audio_problem(job[0], root, job[1]), jobs)
        return list(tqdm(results, total=len(jobs), desc="decoding audio", unit="clip"))


def _as_list(value: Any) -> Any:
    """Parquet gives list cells back as arrays; make them lists and leave anything else as is."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    return list(value) if isinstance(value, tuple) else value


def _votes(value: Any) -> list:
    return value if isinstance(value, list) else []


def consensus_consistent(label: Any, votes: list) -> bool:
    """No consensus, or the consensus is one of the most chosen labels of the row's votes."""
    if label == NO_AGREEMENT:
        return True
    counts = Counter(votes)
    if not counts:
        return False
    top = max(counts.values())
    return label in {v for v, n in counts.items() if n == top}


def distribution_sum(value: Any) -> float:
    """Sum of the label distribution's shares; NaN when it is not a JSON object of numbers."""
    try:
        shares = json.loads(value)
    except (TypeError, ValueError):
        return math.nan
    if not isinstance(shares, dict) or not all(_is_number(v) for v in shares.values()):
        return math.nan
    return float(sum(shares.values()))


def with_derived_columns(df: pd.DataFrame, problems: list[str], labels: list[str]) -> pd.DataFrame:
    """The manifest plus the columns the suite checks row by row; `problems` holds each row's
    quarantine reason ('' for a clip that is kept)."""
    frame = df.copy()
    for column in LIST_COLUMNS:
        frame[column] = frame[column].map(_as_list)
    allowed = set(labels)
    votes = frame["annotator_labels"].map(_votes)
    frame["quarantine_reason"] = problems
    frame["speaker_split_count"] = (
        frame.groupby("speaker", dropna=False)["split"].transform("nunique").astype("int64")
    )
    frame["n_votes"] = votes.map(len).astype("int64")
    frame["annotations_aligned"] = [
        len(v) == len(_votes(ids)) == n
        for v, ids, n in zip(votes, frame["annotator_ids"], frame["n_annotators"])
    ]
    frame["unknown_annotator_labels"] = votes.map(
        lambda vs: ",".join(sorted({str(v) for v in vs if v not in allowed}))
    )
    frame["consensus_consistent"] = [
        consensus_consistent(label, v) for label, v in zip(frame["label"], votes)
    ]
    frame["dist_sum"] = frame["label_distribution"].map(distribution_sum).astype("float64")
    return frame


def manifest_suite(labels: list[str], cfg: ManifestGateConfig) -> gx.ExpectationSuite:
    """The manifest contract as one suite over `with_derived_columns`' frame."""
    E = gx.expectations
    kept = Column("quarantine_reason") == ""
    rated = Column("n_votes") > 0
    expectations = [
        E.ExpectTableRowCountToBeBetween(min_value=1, description="the manifest has rows"),
        E.ExpectTableColumnsToMatchSet(
            column_set=list(MANIFEST_COLUMNS), exact_match=False,
            description="every manifest column is present",
        ),
        *[E.ExpectColumnValuesToBeOfType(column=c, type_="str") for c in STRING_COLUMNS],
        *[E.ExpectColumnValuesToBeOfType(column=c, type_="list") for c in LIST_COLUMNS],
        *[
            E.ExpectColumnValuesToBeInTypeList(column=c, type_list=FLOAT_TYPES)
            for c in ("duration_s", "agreement")
        ],
        *[
            E.ExpectColumnValuesToBeInTypeList(column=c, type_list=INT_TYPES)
            for c in ("sample_rate", "n_annotators")
        ],
        *[
            E.ExpectColumnValuesToNotBeNull(column=c)
            for c in MANIFEST_COLUMNS if c not in NULLABLE_COLUMNS
        ],
        E.ExpectColumnValuesToBeUnique(column="utt_id", description="utterance ids are unique"),
        E.ExpectColumnValuesToBeInSet(column="split", value_set=list(SPLITS)),
        E.ExpectColumnValuesToBeInSet(column="gender", value_set=list(GENDERS)),
        E.ExpectColumnValuesToBeInSet(
            column="label", value_set=[*labels, NO_AGREEMENT],
            description="consensus label in the label set, or empty",
        ),
        E.ExpectColumnValuesToBeInSet(
            column="unknown_annotator_labels", value_set=[""],
            description="every annotator label is in the label set",
        ),
        E.ExpectColumnValuesToBeInSet(
            column="speaker_split_count", value_set=[1],
            description="every speaker is in exactly one split",
        ),
        E.ExpectColumnValuesToBeBetween(
            column="n_votes", min_value=1, description="at least one annotator per clip"
        ),
        E.ExpectColumnValuesToBeInSet(
            column="annotations_aligned", value_set=[True],
            description="annotator ids, labels and n_annotators have the same length",
        ),
        E.ExpectColumnValuesToBeInSet(
            column="consensus_consistent", value_set=[True],
            description="the consensus label is among the most voted labels",
        ),
        E.ExpectColumnValuesToNotBeNull(
            column="dist_sum", row_condition=rated,
            description="label_distribution is a JSON object of shares",
        ),
        E.ExpectColumnValuesToBeBetween(
            column="dist_sum", min_value=0.99, max_value=1.01, row_condition=rated,
            description="label_distribution shares sum to 1",
        ),
        E.ExpectColumnValuesToBeBetween(column="agreement", min_value=0.0, max_value=1.0),
        E.ExpectColumnValuesToNotBeNull(
            column="duration_s", row_condition=kept,
            description="kept clips have a header duration",
        ),
        E.ExpectColumnValuesToBeBetween(
            column="sample_rate", min_value=0, strict_min=True, row_condition=kept,
            description="kept clips have a sample rate",
        ),
        E.ExpectColumnValuesToBeInSet(
            column="quarantine_reason", value_set=[""], mostly=1.0 - cfg.max_quarantine_share,
            description="clips quarantined (bad audio, duration outside min_duration_s.."
                        "max_duration_s) at most manifest_gate.max_quarantine_share ="
                        f" {cfg.max_quarantine_share:.1%}",
        ),
    ]
    return gx.ExpectationSuite(name=SUITE_NAME, expectations=expectations)


def _check_config(cfg: ManifestGateConfig) -> None:
    if not 0.0 <= cfg.max_quarantine_share <= 1.0:
        raise ValueError(
            f"manifest_gate.max_quarantine_share must be in [0, 1], got {cfg.max_quarantine_share}"
        )
    if not 0.0 <= cfg.min_duration_s <= cfg.max_duration_s:
        raise ValueError(
            "manifest_gate needs 0 <= min_duration_s <= max_duration_s, got"
            f" {cfg.min_duration_s} and {cfg.max_duration_s}"
        )


def run_manifest_gate(
    manifest_path: Path, cfg: ManifestGateConfig, data_root: Path | None = None
) -> GateResult:
    """Gate a prepared manifest; writes the gated manifest (on success), quarantine and report.

    `data_root` overrides the manifest metadata's root for finding the audio (the audio has
    moved), and the gated manifest records it. On failure no gated manifest is left in `cfg.out`.
    """
    _check_config(cfg)
    df, meta = read_manifest(manifest_path)
    root = Path(data_root if data_root is not None else meta.data_root)
    problems = [audio or duration_problem(duration, cfg)
                for audio, duration in zip(inspect_audio(df, root), df["duration_s"])]
    frame = with_derived_columns(df, problems, meta.labels)
    report_dir = Path(cfg.report_dir)
    summary = validate_frame(
        frame, manifest_suite(meta.labels, cfg), report_dir, id_columns=EXAMPLE_ID_COLUMNS
    )

    out = Path(cfg.out)
    gated = write_quarantine_and_gated(
        df, dataclasses.replace(meta, data_root=str(root)), frame["quarantine_reason"],
        out / QUARANTINE_FILE, out / GATED_MANIFEST, summary["success"],
    )

    n_rows, n_quarantined = len(df), int((frame["quarantine_reason"] != "").sum())
    report_path = write_result(
        report_dir,
        {
            **summary,
            "n_rows": n_rows,
            "n_quarantined": n_quarantined,
            "quarantine_share": n_quarantined / n_rows if n_rows else 0.0,
            "max_quarantine_share": cfg.max_quarantine_share,
            "quarantine": str(out / QUARANTINE_FILE),
            "gated_manifest": gated,
        },
    )
    return GateResult(
        success=summary["success"],
        failed=failed_expectations(summary),
        n_rows=n_rows,
        n_quarantined=n_quarantined,
        report_path=report_path,
        gate=GATE_NAME,
    )
