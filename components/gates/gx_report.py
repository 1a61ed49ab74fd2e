"""Run a Great Expectations 1.x suite over a pandas frame and report what failed, for any gate.

Each run gets a fresh in-memory context, so runs share no state and nothing is written outside
the report directory: Data Docs go to `<report_dir>/data_docs/`, the summary to
`<report_dir>/result.json`. The summary names each expectation and, for failures, the observed
value and a few offending rows, so a failed `dvc repro` can be read without opening the HTML.
"""
from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import great_expectations as gx
import numpy as np
import pandas as pd
from great_expectations.checkpoint import UpdateDataDocsAction
from great_expectations.core.expectation_validation_result import (
    ExpectationValidationResult,
)
from great_expectations.data_context import EphemeralDataContext
from great_expectations.data_context.types.base import (
    DataContextConfig,
    InMemoryStoreBackendDefaults,
    ProgressBarsConfig,
)

from components.prepare.schema import ManifestMeta, meta_path, write_manifest

DATA_DOCS_DIR = "data_docs"
RESULT_FILE = "result.json"
GATED_MANIFEST = "manifest.parquet"
QUARANTINE_FILE = "quarantine.csv"
QUARANTINE_COLUMNS = ["utt_id", "audio_path", "reason"]
DOCS_SITE = "gate_report"
N_EXAMPLES = 5
"""Offending rows kept per failed expectation (in result.json, Data Docs and the error)."""


@dataclass
class GateResult:
    success: bool
    failed: list[dict]
    """Summaries of the failed expectations (as in result.json)."""
    n_rows: int
    n_quarantined: int
    report_path: Path
    """The result.json of this run."""
    gate: str = "gate"


class GateFailed(RuntimeError):
    """A gate's suite failed; the message lists the failed expectations with example rows."""


def gx_context(report_dir: Path | str) -> EphemeralDataContext:
    """An in-memory, offline context whose only Data Docs site is `<report_dir>/data_docs`."""
    docs_dir = (Path(report_dir) / DATA_DOCS_DIR).resolve()
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        data_docs_sites={
            DOCS_SITE: {
                "class_name": "SiteBuilder",
                "show_how_to_buttons": False,
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(docs_dir),
                },
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            }
        },
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
    )
    return gx.get_context(project_config=config, mode="ephemeral")


def validate_frame(
    df: pd.DataFrame,
    suite: gx.ExpectationSuite,
    report_dir: Path | str,
    id_columns: Sequence[str] = ("utt_id",),
    n_examples: int = N_EXAMPLES,
) -> dict:
    """Validate `df` against `suite` through a Checkpoint that builds Data Docs.

    Returns the JSON-ready summary: suite, success, statistics, one entry per expectation
    and the Data Docs index relative to `report_dir`. Example rows name `id_columns`.
    """
    report_dir = Path(report_dir)
    docs_dir = report_dir / DATA_DOCS_DIR
    shutil.rmtree(docs_dir, ignore_errors=True)  # the docs describe this run only
    context = gx_context(report_dir)
    batch = (
        context.data_sources.add_pandas(f"{suite.name}_source")
        .add_dataframe_asset(f"{suite.name}_rows")
        .add_batch_definition_whole_dataframe("all_rows")
    )
    suite = context.suites.add(suite)
    validation = context.validation_definitions.add(
        gx.ValidationDefinition(name=f"{suite.name}_validation", data=batch, suite=suite)
    )
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(
            name=f"{suite.name}_checkpoint",
            validation_definitions=[validation],
            actions=[UpdateDataDocsAction(name="update_data_docs", site_names=[DOCS_SITE])],
            result_format={
                "result_format": "SUMMARY",
                "unexpected_index_column_names": list(id_columns),
                "partial_unexpected_count": n_examples,
            },
        )
    )
    result = checkpoint.run(batch_parameters={"dataframe": df})
    (run_result,) = result.run_results.values()
    index = docs_dir / "index.html"
    if not index.is_file():
        raise RuntimeError(f"Great Expectations did not write Data Docs to {index}")
    return {
        "suite": suite.name,
        "success": bool(result.success),
        "statistics": json_safe(run_result.statistics),
        "expectations": [summarise_expectation(r, n_examples) for r in run_result.results],
        "data_docs": f"{DATA_DOCS_DIR}/index.html",
    }


def summarise_expectation(result: ExpectationValidationResult, n_examples: int) -> dict:
    """One expectation's outcome: what it checks, whether it held, and for failures why."""
    data = result.to_json_dict()
    config = data["expectation_config"]
    kwargs = {k: v for k, v in config["kwargs"].items() if k != "batch_id"}
    outcome = data.get("result") or {}
    entry: dict[str, Any] = {
        "expectation": config["type"],
        "column": kwargs.get("column"),
        "description": config.get("description"),
        "success": bool(data["success"]),
        "kwargs": kwargs,
    }
    for key in ("element_count", "unexpected_count", "unexpected_percent"):
        if key in outcome:
            entry[key] = outcome[key]
    if not entry["success"]:
        if "observed_value" in outcome:
            entry["observed_value"] = outcome["observed_value"]
        examples = outcome.get("partial_unexpected_index_list") or outcome.get(
            "partial_unexpected_list", []
        )
        entry["examples"] = list(examples)[:n_examples]
        error = _exception_message(data.get("exception_info"))
        if error:
            entry["error"] = error
    return json_safe(entry)


def _exception_message(info: Any) -> str | None:
    """GX nests exception info either flat or per metric; return the first raised message."""
    if not isinstance(info, dict):
        return None
    if "raised_exception" in info:
        return info.get("exception_message") if info["raised_exception"] else None
    for nested in info.values():
        message = _exception_message(nested)
        if message:
            return message
    return None


def json_safe(value: Any) -> Any:
    """Plain JSON types: numpy scalars and arrays unwrapped, NaN/inf as null, paths as strings."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def write_result(report_dir: Path | str, summary: dict) -> Path:
    """Write `<report_dir>/result.json` (strict JSON: a NaN would be an error, not a token)."""
    path = Path(report_dir) / RESULT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(json_safe(summary), indent=2, allow_nan=False) + "\n")
    return path


def write_quarantine_and_gated(manifest: pd.DataFrame, meta: ManifestMeta, reasons: pd.Series,
                               quarantine_path: Path, gated_path: Path,
                               success: bool) -> Path | None:
    """Write `quarantine_path` (utt_id, audio path and reason of each manifest row with a
    non-empty reason in `reasons`, aligned with `manifest`) and, when the gate passed, the gated
    manifest (the other rows) to `gated_path`, which is returned. On failure no gated manifest
    is left there: a stale one would let later stages run on a set no gate let through."""
    bad = reasons != ""
    quarantine = manifest.loc[bad, ["utt_id", "audio_path"]].assign(reason=reasons[bad])
    quarantine_path.parent.mkdir(parents=True, exist_ok=True)
    quarantine[QUARANTINE_COLUMNS].to_csv(quarantine_path, index=False)
    if success:
        write_manifest(manifest[~bad].reset_index(drop=True), meta, gated_path)
        return gated_path
    for stale in (gated_path, meta_path(gated_path)):
        stale.unlink(missing_ok=True)
    return None


def failed_expectations(summary: dict) -> list[dict]:
    return [e for e in summary["expectations"] if not e["success"]]


def describe_failure(entry: dict) -> str:
    """One line for a failed expectation: what, on which column, how many rows, examples."""
    what = entry["expectation"] + (f" on {entry['column']}" if entry.get("column") else "")
    if entry.get("description"):
        what += f" ({entry['description']})"
    details = []
    if "unexpected_count" in entry:
        details.append(
            f"{entry['unexpected_count']} of {entry.get('element_count', '?')} rows"
            f" ({entry.get('unexpected_percent') or 0:.1f}%)"
        )
    elif "observed_value" in entry:
        details.append(f"observed {entry['observed_value']!r}")
    if entry.get("examples"):
        details.append("e.g. " + "; ".join(_format_example(x) for x in entry["examples"]))
    if entry.get("error"):
        details.append(f"error: {entry['error']}")
    return what + (": " + ", ".join(details) if details else "")


def _format_example(example: Any) -> str:
    if isinstance(example, dict):
        return " ".join(f"{k}={v!r}" for k, v in example.items())
    return repr(example)


def raise_if_failed(result: GateResult) -> None:
    """Raise `GateFailed` naming every failed expectation and its example rows."""
    if result.success:
        return
    lines = [
        f"{result.gate} failed {len(result.failed)} expectation(s)"
        f" on {result.n_rows} rows ({result.n_quarantined} quarantined);"
        f" report: {result.report_path}"
    ]
    lines += [f"  - {describe_failure(entry)}" for entry in result.failed]
    raise GateFailed("\n".join(lines))
