"""The manifest contract: its columns, and the metadata file written beside it.

`manifest.parquet` holds one row per utterance; `manifest.json` beside it says which corpus,
which data root the relative audio paths are under, and which label set applies.
"""
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

MANIFEST_COLUMNS: dict[str, str] = {
    "utt_id": "unique id of the utterance",
    "corpus": "corpus name (demo, ravdess, cremad, msp_podcast, iemocap, emodb)",
    "audio_path": "audio file relative to the data root ('/' separators, no '..')",
    "speaker": "speaker id, unique within the corpus",
    "gender": "female, male or unknown",
    "split": "train, dev or test (speaker-independent)",
    "duration_s": "duration from the file header (NaN when the header is unreadable)",
    "sample_rate": "sample rate from the file header (0 when unreadable)",
    "transcript": "reference transcript ('' when the corpus has none)",
    "label": "consensus label in the label set ('' when annotators did not agree)",
    "annotator_ids": "list of annotator ids, one per rating kept",
    "annotator_labels": "list of labels (in the label set), aligned with annotator_ids",
    "label_distribution": "JSON object label -> share of the kept ratings",
    "agreement": "share of the kept ratings that chose the most chosen label",
    "n_annotators": "number of ratings kept",
}

SPLITS = ("train", "dev", "test")
GENDERS = ("female", "male", "unknown")


@dataclass
class ManifestMeta:
    corpus: str
    data_root: str
    """Folder the audio paths are relative to (as given: relative to the working directory
    or absolute)."""
    labels: list[str]
    """The label set every label in the manifest belongs to."""
    n_rows: int = 0
    unmapped: dict[str, int] = field(default_factory=dict)
    """Label codes that did not map into the label set, with how many ratings had them."""
    problems: list[str] = field(default_factory=list)
    """Loader notes: rows skipped or repaired, and why."""


def meta_path(manifest_path: Path | str) -> Path:
    return Path(manifest_path).with_suffix(".json")


def write_manifest(df: pd.DataFrame, meta: ManifestMeta, manifest_path: Path | str) -> None:
    """Write the parquet and its metadata JSON side by side."""
    manifest_path = Path(manifest_path)
    manifest_path.parent.mkdir(parents=True, exist_ok=True)
    df = df[list(MANIFEST_COLUMNS)]
    df.to_parquet(manifest_path, index=False)
    meta.n_rows = len(df)
    meta_path(manifest_path).write_text(json.dumps(asdict(meta), indent=2, sort_keys=True) + "\n")


def read_manifest(manifest_path: Path | str) -> tuple[pd.DataFrame, ManifestMeta]:
    """Read a manifest and its metadata; a clear error when either is missing or incomplete."""
    manifest_path = Path(manifest_path)
    if not manifest_path.exists():
        raise FileNotFoundError(f"manifest not found: {manifest_path}")
    mpath = meta_path(manifest_path)
    if not mpath.exists():
        raise FileNotFoundError(f"manifest metadata not found: {mpath}")
    df = pd.read_parquet(manifest_path)
    missing = [c for c in MANIFEST_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{manifest_path}: missing columns {missing}")
    meta = ManifestMeta(**json.loads(mpath.read_text()))
    return df, meta
