"""The features gate: measured values are present, plausible and cover the manifest.

Clips whose core measurements are missing or implausible (unreadable audio, no F0, no energy,
non-finite eGeMAPS, an F0 median outside [f0_min_hz, f0_max_hz]) are listed in
`quarantine.csv` with their audio path and the reason; the gate fails when their share, or the
share of clips too short or too unreliable for an intonation call, exceeds its bound. When it
passes it writes the gated manifest (the input manifest minus the quarantined clips) to
`out`: every later stage reads that set, so a quarantined clip reaches no teacher, no training
and no evaluation.
"""
from __future__ import annotations

import math
from pathlib import Path

import great_expectations as gx
import numpy as np
import pandas as pd
from great_expectations.expectations.row_conditions import Column

from components.config import FeaturesGateConfig
from components.features.captions import CONTOURS
from components.features.levels import TERTILE_LEVELS, UNKNOWN
from components.gates.gx_report import (
    GATED_MANIFEST,
    QUARANTINE_FILE,
    GateResult,
    failed_expectations,
    validate_frame,
    write_quarantine_and_gated,
    write_result,
)
from components.prepare.schema import read_manifest

GATE_NAME = "features gate"
N_EGEMAPS = 88
REQUIRED = ("duration_s", "transcript", "transcript_source", "prosody_caption", "intonation")


def unusable_reason(row: dict, cfg: FeaturesGateConfig) -> str:
    """'' when the clip's core measurements exist and are plausible, else why not."""
    if any(str(f).startswith("audio_unreadable") for f in row["flags"]):
        return "audio unreadable"
    missing = [c for c in ("f0_median_hz", "energy_dbfs")
               if not isinstance(row[c], float) or not math.isfinite(row[c])]
    if missing:
        return "no " + " and no ".join(missing)
    if not cfg.f0_min_hz <= row["f0_median_hz"] <= cfg.f0_max_hz:
        return (f"F0 median {row['f0_median_hz']:.1f} Hz outside f0_min_hz..f0_max_hz"
                f" ({cfg.f0_min_hz:g}-{cfg.f0_max_hz:g} Hz)")
    if len(row["egemaps"]) != N_EGEMAPS or not np.all(np.isfinite(row["egemaps"])):
        return "eGeMAPS not finite"
    return ""


def with_derived_columns(feats: pd.DataFrame, cfg: FeaturesGateConfig) -> pd.DataFrame:
    frame = feats.copy()
    frame["unusable"] = [unusable_reason(r, cfg) for r in feats.to_dict("records")]
    frame["egemaps_len"] = [len(v) for v in feats["egemaps"]]
    frame["egemaps_spknorm_len"] = [len(v) for v in feats["egemaps_spknorm"]]
    vectors = [c for c in ("speech_embedding", "speech_embedding_spknorm") if c in frame]
    return frame.drop(columns=["egemaps", "egemaps_spknorm", "flags", *vectors])


def features_suite(cfg: FeaturesGateConfig, manifest_ids: list[str]) -> gx.ExpectationSuite:
    E = gx.expectations
    usable = Column("unusable") == ""
    level_sets = {f"{level}_level": [*names, UNKNOWN] for level, (_, names) in
                  TERTILE_LEVELS.items()}
    expectations = [
        E.ExpectTableRowCountToEqual(value=len(manifest_ids),
                                     description="one features row per manifest row"),
        E.ExpectColumnDistinctValuesToEqualSet(column="utt_id", value_set=manifest_ids,
                                               description="features cover the manifest"),
        E.ExpectColumnValuesToBeUnique(column="utt_id"),
        *[E.ExpectColumnValuesToNotBeNull(column=c, description=f"{c} is always present")
          for c in REQUIRED],
        E.ExpectColumnValuesToBeInSet(
            column="unusable", value_set=[""], mostly=1 - cfg.max_unusable_share,
            description="clips quarantined (F0, energy or eGeMAPS missing, F0 median outside "
                        "f0_min_hz..f0_max_hz) at most features_gate.max_unusable_share ="
                        f" {cfg.max_unusable_share:.1%}"),
        E.ExpectColumnValuesToNotBeNull(column="rate_sps", row_condition=usable, mostly=0.95,
                                        description="speaking rate measured on usable clips"),
        E.ExpectColumnValuesToBeBetween(column="energy_dbfs", min_value=-90.0, max_value=0.0,
                                        row_condition=usable),
        E.ExpectColumnValuesToBeBetween(column="pause_ratio", min_value=0.0, max_value=1.0,
                                        row_condition=usable),
        E.ExpectColumnValuesToBeInSet(column="egemaps_len", value_set=[N_EGEMAPS],
                                      description="eGeMAPS has 88 functionals"),
        E.ExpectColumnValuesToBeInSet(column="egemaps_spknorm_len", value_set=[N_EGEMAPS]),
        *[E.ExpectColumnValuesToBeInSet(column=c, value_set=values,
                                        description=f"{c} in its set")
          for c, values in level_sets.items()],
        *[E.ExpectColumnValuesToNotBeInSet(column=c, value_set=[UNKNOWN], row_condition=usable,
                                           description=f"{c} known on usable clips")
          for c in ("pitch_level", "energy_level")],
        E.ExpectColumnValuesToBeInSet(column="intonation",
                                      value_set=[*CONTOURS, "uncertain", "too_short"]),
        E.ExpectColumnValuesToNotBeInSet(
            column="intonation", value_set=["too_short"], mostly=1 - cfg.max_too_short_share,
            description="share of clips too short for an intonation call is bounded"),
        E.ExpectColumnValuesToNotBeInSet(
            column="intonation", value_set=["uncertain"], mostly=1 - cfg.max_uncertain_share,
            description="share of uncertain intonation calls is bounded"),
    ]
    return gx.ExpectationSuite(name="features", expectations=expectations)


def run_features_gate(cfg: FeaturesGateConfig) -> GateResult:
    """Validate features.parquet against its manifest; write result.json, Data Docs and
    quarantine.csv under `cfg.report_dir`, and on success the gated manifest to `cfg.out`
    (on failure none is left there)."""
    features_path = Path(cfg.features)
    if not features_path.exists():
        raise FileNotFoundError(f"features not found: {features_path}")
    feats = pd.read_parquet(features_path)
    manifest, meta = read_manifest(cfg.manifest)
    frame = with_derived_columns(feats, cfg)
    report_dir = Path(cfg.report_dir)
    summary = validate_frame(frame, features_suite(cfg, manifest["utt_id"].tolist()),
                             report_dir, id_columns=("utt_id", "speaker"))
    reasons = manifest["utt_id"].map(dict(zip(frame["utt_id"], frame["unusable"]))).fillna("")
    gated = write_quarantine_and_gated(manifest, meta, reasons, report_dir / QUARANTINE_FILE,
                                       Path(cfg.out) / GATED_MANIFEST, summary["success"])
    n_rows, n_bad = len(frame), int((reasons != "").sum())
    report_path = write_result(report_dir, {
        **summary, "n_rows": n_rows, "n_quarantined": n_bad,
        "quarantine_share": n_bad / n_rows if n_rows else 0.0,
        "max_unusable_share": cfg.max_unusable_share,
        "gated_manifest": gated,
        "intonation": frame["intonation"].value_counts().to_dict(),
    })
    return GateResult(success=summary["success"], failed=failed_expectations(summary),
                      n_rows=n_rows, n_quarantined=n_bad, report_path=report_path,
                      gate=GATE_NAME)
