"""The `prepare` stage: load (or synthesise) a corpus and write the manifest."""
import json
from pathlib import Path

import pandas as pd

from components.config import Params, as_dict
from components.prepare.manifest import build_manifest
from components.prepare.records import CorpusLayoutError
from components.prepare.schema import ManifestMeta, write_manifest
from components.tracking import stage_run


def load(params: Params, corpus: str, data_dir: Path | None, out: Path):
    """(loaded corpus, data root, the corpus's own label set or None)."""
    cfg = params.prepare
    if corpus == "demo":
        from components.prepare.demo import generate_demo_corpus

        root = data_dir or out / "audio"
        return generate_demo_corpus(root, cfg.demo, params.base.seed), root, list(cfg.demo.emotions)
    from components.prepare.loaders import load_corpus

    if data_dir is None:
        raise ValueError(f"corpus {corpus!r} needs a data folder (--data-dir or prepare.data_dir)")
    if not data_dir.is_dir():
        raise FileNotFoundError(f"data folder not found: {data_dir}")
    options = {}
    if corpus == "cremad" and cfg.cremad_audio_dir:
        options["audio_dir"] = Path(cfg.cremad_audio_dir)
    return load_corpus(corpus, data_dir, **options), data_dir, None


def require_some_audio(df: pd.DataFrame, corpus: str, root: Path) -> None:
    """A corpus none of whose clips has a readable header is the wrong folder (or its audio is
    elsewhere): one clear error here rather than every row quarantined by the gate."""
    if (df["sample_rate"] > 0).any():
        return
    example = root / df["audio_path"].iloc[0]
    why = "cannot be read" if example.exists() else "does not exist"
    raise CorpusLayoutError(
        f"{corpus}: none of the {len(df)} labelled clips has readable audio under {root} "
        f"(e.g. {example} {why})"
    )


def run_prepare(params: Params, corpus: str, data_dir: Path | None, out: Path) -> ManifestMeta:
    """Write `out/manifest.parquet`, its metadata JSON and `out/excluded.csv`; log to MLflow."""
    with stage_run("prepare", params.tracking, {"prepare": as_dict(params.prepare),
                                                "base": as_dict(params.base)}) as run:
        loaded, root, corpus_labels = load(params, corpus, data_dir, out)
        df, meta, excluded = build_manifest(
            loaded, corpus, root, params.base.labels, params.prepare.label_map,
            params.prepare.min_agreement, params.prepare.split, params.base.seed, corpus_labels,
        )
        require_some_audio(df, corpus, root)
        write_manifest(df, meta, out / "manifest.parquet")
        excluded.to_csv(out / "excluded.csv", index=False)
        summary = {
            "rows": len(df),
            "speakers": int(df["speaker"].nunique()),
            "excluded": len(excluded),
            "no_agreement_share": float((df["label"] == "").mean()),
            "mean_annotators": float(df["n_annotators"].mean()),
            "mean_agreement": float(df["agreement"].mean()),
            "split_rows": df["split"].value_counts().to_dict(),
            "split_speakers": df.groupby("split")["speaker"].nunique().to_dict(),
            "labels": df["label"].replace("", "<none>").value_counts().to_dict(),
            "unmapped": meta.unmapped,
        }
        (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
        import mlflow

        mlflow.log_metrics({k: float(v) for k, v in summary.items() if not isinstance(v, dict)})
        mlflow.log_dict(summary, "prepare_summary.json")
        mlflow.log_dict(json.loads((out / "manifest.json").read_text()), "manifest_meta.json")
        run_id = run.info.run_id
    print(f"prepare: {corpus}: {summary['rows']} clips, {summary['speakers']} speakers, "
          f"splits {summary['split_rows']}, no-agreement share {summary['no_agreement_share']:.3f}"
          f" (MLflow run {run_id})")
    if meta.unmapped:
        print(f"prepare: label codes outside the label set: {meta.unmapped}")
    for problem in meta.problems[:20]:
        print(f"prepare: note: {problem}")
    return meta
