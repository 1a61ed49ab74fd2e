"""Turn a loaded corpus into the manifest: labels mapped, votes summarised, splits drawn.

Every corpus goes through the same code here, so the consensus rule, the agreement score and
the handling of labels outside the label set are the same whatever the corpus.
"""
import json
from collections import Counter
from pathlib import Path

import pandas as pd

from components.audio_io import AudioReadError, probe
from components.config import SplitConfig
from components.labels import CANONICAL_LABELS, NO_AGREEMENT, code_map
from components.paths import UnsafePathError, resolve_audio_path
from components.prepare.records import LoadedCorpus
from components.prepare.schema import ManifestMeta
from components.prepare.splits import assign_speaker_splits

UNKNOWN_SPEAKERS = {"", "unknown", "none", "nan"}


class LabelMapper:
    """Corpus code -> canonical name -> (label map) -> target label; counts what does not map."""

    def __init__(self, corpus: str, labels: list[str] | None, label_map: dict[str, str],
                 corpus_labels: list[str] | None = None):
        self.codes = code_map(corpus)
        for source, target in label_map.items():
            for name in (source, target):
                if name not in CANONICAL_LABELS:
                    raise ValueError(
                        f"prepare.label_map: {name!r} is not a canonical label "
                        f"({', '.join(CANONICAL_LABELS)})"
                    )
        for name in labels or []:
            if name not in CANONICAL_LABELS:
                raise ValueError(
                    f"base.labels: {name!r} is not a canonical label ({', '.join(CANONICAL_LABELS)})"
                )
        self.label_map = label_map
        if labels is None:
            own = corpus_labels or [v for v in self.codes.values() if v != NO_AGREEMENT]
            mapped = {label_map.get(v, v) for v in own}
            labels = [name for name in CANONICAL_LABELS if name in mapped]
        self.labels = list(labels)
        self.unmapped: Counter = Counter()

    def map(self, code: str) -> str | None:
        """The target label, NO_AGREEMENT, or None (counted) when the code has no place."""
        canonical = self.codes.get(code)
        if canonical is None:
            self.unmapped[f"code:{code}"] += 1
            return None
        if canonical == NO_AGREEMENT:
            return NO_AGREEMENT
        target = self.label_map.get(canonical, canonical)
        if target not in self.labels:
            self.unmapped[f"label:{target}"] += 1
            return None
        return target


def plurality(labels: list[str], min_agreement: float) -> str:
    """The unique most chosen label with at least `min_agreement` of the votes, else ''."""
    if not labels:
        return NO_AGREEMENT
    counts = Counter(labels).most_common()
    top, n_top = counts[0]
    if len(counts) > 1 and counts[1][1] == n_top:
        return NO_AGREEMENT
    return top if n_top / len(labels) >= min_agreement else NO_AGREEMENT


def _probe(rel: str, data_root: Path) -> tuple[float, int]:
    try:
        duration, sr, _ = probe(resolve_audio_path(rel, data_root))
        return duration, sr
    except (AudioReadError, UnsafePathError):
        return float("nan"), 0


def build_manifest(
    loaded: LoadedCorpus,
    corpus: str,
    data_root: Path | str,
    labels: list[str] | None,
    label_map: dict[str, str],
    min_agreement: float,
    split_cfg: SplitConfig,
    seed: int,
    corpus_labels: list[str] | None = None,
) -> tuple[pd.DataFrame, ManifestMeta, pd.DataFrame]:
    """(manifest, metadata, excluded rows with the reason) for a loaded corpus.

    A clip is excluded only when none of its ratings falls in the label set (a configured
    subset such as 4-class IEMOCAP); it is listed with the reason, never dropped silently.
    Files that cannot be probed keep NaN duration: the manifest gate quarantines them.
    """
    mapper = LabelMapper(corpus, labels, label_map, corpus_labels)
    data_root = Path(data_root)
    ids = Counter(u.utt_id for u in loaded.utterances)
    duplicated = sorted(i for i, n in ids.items() if n > 1)
    if duplicated:
        raise ValueError(f"{corpus}: duplicate utterance ids, e.g. {duplicated[:5]}")

    rows, excluded = [], []
    for utt in loaded.utterances:
        kept = [(a, mapper.map(code)) for a, code in utt.votes]
        kept = [(a, lab) for a, lab in kept if lab]
        if not kept:
            excluded.append({"utt_id": utt.utt_id, "reason": "no rating in the label set"})
            continue
        votes = [lab for _, lab in kept]
        if utt.consensus_code is None:
            label = plurality(votes, min_agreement)
        elif utt.consensus_code == NO_AGREEMENT:
            label = NO_AGREEMENT
        else:
            label = mapper.map(utt.consensus_code) or NO_AGREEMENT
        counts = Counter(votes)
        speaker = utt.speaker
        if str(speaker).strip().lower() in UNKNOWN_SPEAKERS:
            speaker = f"unknown:{utt.utt_id}"  # an unknown voice is its own speaker, never shared
        duration, sr = _probe(utt.audio_path, data_root)
        rows.append({
            "utt_id": utt.utt_id,
            "corpus": corpus,
            "audio_path": utt.audio_path,
            "speaker": f"{speaker}",
            "gender": utt.gender if utt.gender in ("female", "male") else "unknown",
            "split": utt.split,
            "duration_s": duration,
            "sample_rate": sr,
            "transcript": utt.transcript or "",
            "label": label,
            "annotator_ids": [a for a, _ in kept],
            "annotator_labels": votes,
            "label_distribution": json.dumps(
                {k: round(v / len(votes), 6) for k, v in sorted(counts.items())}, sort_keys=True
            ),
            "agreement": max(counts.values()) / len(votes),
            "n_annotators": len(votes),
        })

    df = pd.DataFrame(rows)
    if df.empty:
        raise ValueError(f"{corpus}: no utterance has a rating in the label set {mapper.labels}")
    official = split_cfg.use_official and df["split"].notna().all()
    if not official:
        genders = df.groupby("speaker")["gender"].agg(lambda g: g.mode().iloc[0]).to_dict()
        df["split"] = df["speaker"].map(assign_speaker_splits(genders, split_cfg, seed))
    df["sample_rate"] = df["sample_rate"].astype("int64")
    problems = list(loaded.problems)
    if excluded:
        problems.append(f"{len(excluded)} clips had no rating in the label set and were excluded")
    meta = ManifestMeta(
        corpus=corpus, data_root=str(data_root), labels=mapper.labels,
        unmapped=dict(sorted(mapper.unmapped.items())), problems=problems,
    )
    return df, meta, pd.DataFrame(excluded, columns=["utt_id", "reason"])
