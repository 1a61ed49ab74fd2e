"""A small demo corpus with its manifest, written to a test folder."""
from pathlib import Path

import pandas as pd

from components.config import DemoConfig, SplitConfig
from components.prepare.demo import generate_demo_corpus
from components.prepare.manifest import build_manifest
from components.prepare.schema import ManifestMeta, write_manifest


def demo_manifest(root: Path, n_clips: int, n_speakers: int, seed: int,
                  split: SplitConfig) -> tuple[pd.DataFrame, ManifestMeta]:
    """Synthesise `n_clips` clips under root/audio and write root/manifest.parquet."""
    loaded = generate_demo_corpus(root / "audio", DemoConfig(n_clips=n_clips,
                                                             n_speakers=n_speakers),
                                  seed=seed, progress=False)
    df, meta, _ = build_manifest(loaded, "demo", root / "audio", None, {}, 0.0, split, seed,
                                 DemoConfig().emotions)
    write_manifest(df, meta, root / "manifest.parquet")
    return df, meta
