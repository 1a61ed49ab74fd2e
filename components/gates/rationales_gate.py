"""The rationales gate: enough training clips got a kept, grounded, non-leaking rationale, and
the kept ones do not skew the label distribution the student will learn from."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import great_expectations as gx
import pandas as pd
from great_expectations.expectations.row_conditions import Column

from components.config import RationalesGateConfig, VerifyConfig
from components.gates.gx_report import GateResult, failed_expectations, validate_frame, write_result
from components.distill.stage import read_records
from components.prepare.schema import read_manifest

GATE_NAME = "rationales gate"


def label_tv_distance(kept_labels: list[str], reference_labels: list[str]) -> float:
    """Total variation distance between two label distributions (0 same, 1 disjoint)."""
    if not kept_labels or not reference_labels:
        return 1.0
    a, b = Counter(kept_labels), Counter(reference_labels)
    return 0.5 * sum(abs(a[k] / len(kept_labels) - b[k] / len(reference_labels))
                     for k in set(a) | set(b))


def with_derived_columns(records: pd.DataFrame, reference_labels: list[str]) -> pd.DataFrame:
    frame = records[["utt_id", "label", "backend", "kept", "reason"]].copy()
    checks = records["checks"]
    frame["kept_int"] = frame["kept"].astype(int)
    frame["n_words"] = [c.get("n_words", 0) for c in checks]
    frame["leaks"] = [bool(c.get("leakage")) for c in checks]
    frame["grounding"] = [float(c.get("grounding", 0.0)) for c in checks]
    kept_labels = frame.loc[frame["kept"], "label"].tolist()
    frame["label_tv_distance"] = label_tv_distance(kept_labels, reference_labels)
    return frame


def rationales_suite(cfg: RationalesGateConfig, verify: VerifyConfig,
                     expected_ids: list[str]) -> gx.ExpectationSuite:
    E = gx.expectations
    kept = Column("kept_int") == 1
    return gx.ExpectationSuite(name="rationales", expectations=[
        E.ExpectColumnDistinctValuesToEqualSet(
            column="utt_id", value_set=expected_ids,
            description="every training clip with a consensus label has a record"),
        E.ExpectColumnValuesToBeUnique(column="utt_id"),
        E.ExpectColumnMeanToBeBetween(column="kept_int", min_value=cfg.min_keep_rate,
                                      description="keep rate above its bound"),
        E.ExpectColumnValuesToBeBetween(column="n_words", min_value=verify.min_words,
                                        max_value=verify.max_words, row_condition=kept,
                                        description="kept rationales within the length bounds"),
        E.ExpectColumnValuesToBeInSet(column="leaks", value_set=[False], row_condition=kept,
                                      description="no kept rationale leaks its label"),
        E.ExpectColumnMeanToBeBetween(column="grounding", min_value=cfg.min_grounding,
                                      row_condition=kept,
                                      description="kept rationales are grounded in the cues"),
        E.ExpectColumnMaxToBeBetween(
            column="label_tv_distance", max_value=cfg.max_label_tv_distance,
            description="labels of kept rationales match the manifest's distribution"),
    ])


def run_rationales_gate(cfg: RationalesGateConfig, verify: VerifyConfig,
                        splits: list[str]) -> GateResult:
    """Validate rationales.jsonl against the training clips of its manifest."""
    records = pd.DataFrame(read_records(cfg.rationales))
    manifest, _ = read_manifest(cfg.manifest)
    expected = manifest[manifest["split"].isin(splits) & (manifest["label"] != "")]
    if records.empty:
        raise ValueError(f"{cfg.rationales} holds no records")
    frame = with_derived_columns(records, expected["label"].tolist())
    report_dir = Path(cfg.report_dir)
    summary = validate_frame(frame, rationales_suite(cfg, verify, expected["utt_id"].tolist()),
                             report_dir, id_columns=("utt_id", "label"))
    report_path = write_result(report_dir, {
        **summary, "n_rows": len(frame), "keep_rate": float(frame["kept_int"].mean()),
        "label_tv_distance": float(frame["label_tv_distance"].iloc[0]),
        "kept_by_backend": frame.loc[frame["kept"], "backend"].value_counts().to_dict(),
    })
    return GateResult(success=summary["success"], failed=failed_expectations(summary),
                      n_rows=len(frame), n_quarantined=int((~frame["kept"]).sum()),
                      report_path=report_path, gate=GATE_NAME)
