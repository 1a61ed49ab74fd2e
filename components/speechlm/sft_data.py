"""The SFT data mix: explainable-SER examples plus prosody-perception examples.

Each example is a plain, JSON-ready dict:
- `utt_id`, `split`, `task` (`ser` or a perception task: pitch, energy, rate, intonation);
- `fmt`, `transcript_source`: the target format and transcript source it was written for;
- `transcript`: the features stage's transcript (the reference where the corpus has one, else
  the ASR's); it goes into SER prompts with transcript_source `asr`;
- `target`: the text the model learns to write (`formats.format_target`);
- `label`: the consensus label (SER; None for perception);
- `level`: the measured level that is the answer (perception; None for SER);
- `rationale`: the rationale in the target (SER with a kept rationale; else None);
- `caption`: the clip's prosody caption (SER with `prosody_caption`; else None): the measured
  levels in words, read in the prompt (`formats.build_prompt`'s "How it is said");
- `prosody_norm`: how the clip's prosody token is normalised, `speaker` (over the speaker's
  clips, the features stage's `egemaps_spknorm`) or `population` (with the training
  population's statistics, as a served clip of an unknown speaker is): round(
  population_norm_share x examples) of each split, drawn with the seed.

The prompt is not stored: how many soft audio tokens a clip gets depends on the encoder, so
the collator builds it at batch time with `example_prompt(example, label_set, n_audio_tokens,
audio_token)`, label_set being the manifest's `ManifestMeta.labels`.

Which clips: every clip of the configured splits with a consensus label. Training clips
(split `train`) need a kept teacher rationale (or `label_only_fallback`), since a target
without one would teach the model to stop after the label; dev and test clips are all kept,
with a label-only target where no rationale exists, so evaluation sees every labelled clip.
Perception examples are drawn per split from the same clips: round(perception_ratio x SER
examples) of them, tasks in turn, each (clip, task) pair at most once, clips shuffled with
the seed, and only clips whose level for the task was measured (not unknown, uncertain or
too_short).
"""
from __future__ import annotations

import logging
import math
import random
import re
from collections import Counter, deque
from dataclasses import dataclass, field
from itertools import cycle

import pandas as pd

from components.speechlm.formats import (
    FORMATS,
    PERCEPTION_TASKS,
    SER_TASK,
    TRANSCRIPT_SOURCES,
    build_prompt,
    format_target,
)

log = logging.getLogger(__name__)

TRAIN_SPLIT = "train"
SPEAKER_NORM, POPULATION_NORM = "speaker", "population"
"""The two normalisations of the prosody token's vector (see `prosody_norm` above)."""
PERCEPTION_COLUMNS = {"pitch": "pitch_level", "energy": "energy_level", "rate": "rate_level",
                      "intonation": "intonation"}
"""Perception task -> features.parquet column holding its measured level."""
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass
class SftDataConfig:
    fmt: str = "explain_after"
    """explain_after or reason_first (see components.speechlm.formats)."""
    transcript_source: str = "asr"
    """asr: the transcript is in the prompt; model: the model writes it in the target."""
    perception_ratio: float = 0.5
    """Perception examples per SER example, per split; 0 leaves them out (the ablation)."""
    perception_tasks: list[str] = field(default_factory=lambda: list(PERCEPTION_TASKS))
    population_norm_share: float = 0.3
    """Share of the examples, per split, whose prosody token is population-normalised."""
    splits: list[str] = field(default_factory=lambda: [TRAIN_SPLIT])
    seed: int = 1234
    label_only_fallback: bool = False
    """Give training clips without a kept rationale a label-only target instead of leaving
    them out."""
    prosody_caption: bool = False
    """Put the clip's prosody caption (the features stage's measured levels in words) into
    SER prompts; perception prompts never hold it (their answer must be heard)."""
    max_rationale_words: int | None = None
    """Cut longer rationales at the last sentence end within this many words (at the word
    limit when the first sentence is longer); None keeps them whole."""


def _check_config(cfg: SftDataConfig) -> None:
    if cfg.fmt not in FORMATS:
        raise ValueError(f"unknown target format {cfg.fmt!r}; expected one of {FORMATS}")
    if cfg.transcript_source not in TRANSCRIPT_SOURCES:
        raise ValueError(f"unknown transcript_source {cfg.transcript_source!r}; "
                         f"expected one of {TRANSCRIPT_SOURCES}")
    if not math.isfinite(cfg.perception_ratio) or cfg.perception_ratio < 0:
        raise ValueError(f"perception_ratio must be a finite number >= 0, "
                         f"got {cfg.perception_ratio!r}")
    unknown = [t for t in cfg.perception_tasks if t not in PERCEPTION_TASKS]
    if unknown:
        raise ValueError(f"unknown perception tasks {unknown}; known: {list(PERCEPTION_TASKS)}")
    if len(set(cfg.perception_tasks)) != len(cfg.perception_tasks):
        raise ValueError(f"perception_tasks repeats a task: {cfg.perception_tasks}")
    if not 0 <= cfg.population_norm_share <= 1:
        raise ValueError(f"population_norm_share must be within [0, 1], "
                         f"got {cfg.population_norm_share!r}")
    if cfg.perception_ratio > 0 and not cfg.perception_tasks:
        raise ValueError("perception_ratio > 0 needs at least one perception task")
    if not cfg.splits:
        raise ValueError("splits is empty")
    if cfg.max_rationale_words is not None and cfg.max_rationale_words < 1:
        raise ValueError(f"max_rationale_words must be positive, got {cfg.max_rationale_words}")


def _check_table(df: pd.DataFrame, columns: list[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what} lacks columns {missing}")
    repeated = df["utt_id"][df["utt_id"].duplicated()].unique().tolist()
    if repeated:
        raise ValueError(f"{what} repeats utt_id {repeated[:3]}")


def shorten(text: str, max_words: int | None) -> str:
    """`text` cut to at most `max_words` words at sentence ends: the first sentences that fit
    and the last one, the rationale's conclusion ("Together these cues point to a neutral
    state."), which a cut from the front alone dropped, so that no target said which emotion
    its cues argue for; without whole sentences that fit, the first `max_words` words."""
    words = text.split()
    if max_words is None or len(words) <= max_words:
        return " ".join(words)
    sentences = [s.split() for s in _SENTENCE_END.split(" ".join(words))]
    last = sentences.pop() if len(sentences) > 1 and len(sentences[-1]) < max_words else []
    kept: list[str] = []
    for sentence in sentences:
        if len(kept) + len(sentence) + len(last) > max_words:
            break
        kept += sentence
    return " ".join(kept + last) if kept else " ".join(words[:max_words])


def _kept_rationales(rationales: list[dict], labels: dict[str, str]) -> dict[str, str]:
    """utt_id -> kept rationale; an error for a kept rationale of another label than the
    manifest's (the rationales are stale)."""
    kept: dict[str, str] = {}
    outside = 0
    for i, record in enumerate(rationales):
        missing = [k for k in ("utt_id", "label", "rationale", "kept") if k not in record]
        if missing:
            raise ValueError(f"rationale record {i} lacks {missing}")
        if not record["kept"]:
            continue
        utt = record["utt_id"]
        if utt in kept:
            raise ValueError(f"two kept rationales for {utt!r}")
        if utt not in labels:
            outside += 1
            continue
        if record["label"] != labels[utt]:
            raise ValueError(f"the kept rationale of {utt!r} explains {record['label']!r} but "
                             f"the manifest's label is {labels[utt]!r}: rerun distill")
        kept[utt] = record["rationale"]
    if outside:
        log.info("sft data: %d kept rationales are for clips outside the manifest", outside)
    return kept


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _example(clip: dict, cfg: SftDataConfig, task: str, target: str, label: str | None = None,
             level: str | None = None, rationale: str | None = None) -> dict:
    return {"utt_id": clip["utt_id"], "split": clip["split"], "task": task, "fmt": cfg.fmt,
            "transcript_source": cfg.transcript_source, "transcript": _text(clip["transcript"]),
            "target": target, "label": label, "level": level, "rationale": rationale,
            "caption": _text(clip["prosody_caption"]) if cfg.prosody_caption and task == SER_TASK
            else None,
            "prosody_norm": SPEAKER_NORM}


def _assign_norms(examples: list[dict], share: float, rng: random.Random) -> None:
    """Mark round(share x len(examples)) of the examples, drawn with `rng`,
    population-normalised."""
    n = math.floor(share * len(examples) + 0.5)
    for i in rng.sample(range(len(examples)), n):
        examples[i]["prosody_norm"] = POPULATION_NORM


def _perception_picks(clips: list[dict], n: int, tasks: list[str], rng: random.Random,
                      split: str) -> list[tuple[str, dict]]:
    """n (task, clip) pairs, tasks in turn, each pair at most once, measured levels only."""
    queues = {}
    for task in tasks:
        answers = PERCEPTION_TASKS[task][1]
        eligible = [c for c in clips if c[PERCEPTION_COLUMNS[task]] in answers]
        rng.shuffle(eligible)
        queues[task] = deque(eligible)
    available = sum(len(q) for q in queues.values())
    if n > available:
        raise ValueError(f"perception_ratio asks for {n} perception examples in split "
                         f"{split!r} but only {available} (clip, task) pairs have a measured "
                         f"level for tasks {tasks}")
    picks: list[tuple[str, dict]] = []
    turns = cycle(tasks)
    while len(picks) < n:
        task = next(turns)
        if queues[task]:
            picks.append((task, queues[task].popleft()))
    return picks


def build_sft_examples(features: pd.DataFrame, manifest: pd.DataFrame, rationales: list[dict],
                       cfg: SftDataConfig) -> list[dict]:
    """SER and perception examples (see the module docstring) for the splits in `cfg`, split
    by split in `cfg.splits` order: SER in manifest order, then perception."""
    _check_config(cfg)
    tasks = cfg.perception_tasks if cfg.perception_ratio > 0 else []
    _check_table(manifest, ["utt_id", "split", "label"], "the manifest")
    caption = ["prosody_caption"] if cfg.prosody_caption else []
    _check_table(features, ["utt_id", "transcript", *caption,
                            *(PERCEPTION_COLUMNS[t] for t in tasks)], "the features")
    rows = manifest[manifest["split"].isin(cfg.splits)][["utt_id", "split", "label"]]
    absent = sorted(set(rows["utt_id"]) - set(features["utt_id"]))
    if absent:
        raise ValueError(f"the features lack {len(absent)} clips of splits {cfg.splits}, "
                         f"e.g. {absent[:3]}")
    columns = ["utt_id", "transcript", *caption, *(PERCEPTION_COLUMNS[t] for t in tasks)]
    clips = rows.merge(features[columns], on="utt_id", how="left").to_dict("records")
    labels = {c["utt_id"]: _text(c["label"]) for c in clips}
    kept = _kept_rationales(rationales, labels)

    examples: list[dict] = []
    for split in cfg.splits:
        first = len(examples)
        in_split = [c for c in clips if c["split"] == split]
        ser_clips, no_label, no_rationale = [], 0, 0
        for clip in in_split:
            label = labels[clip["utt_id"]]
            if not label:
                no_label += 1
                continue
            rationale = kept.get(clip["utt_id"])
            if rationale is not None:
                rationale = shorten(rationale, cfg.max_rationale_words) or None
            if rationale is None and split == TRAIN_SPLIT and not cfg.label_only_fallback:
                no_rationale += 1
                continue
            target = format_target(SER_TASK, cfg.fmt, cfg.transcript_source,
                                   _text(clip["transcript"]), label, rationale)
            examples.append(_example(clip, cfg, SER_TASK, target, label=label,
                                     rationale=rationale))
            ser_clips.append(clip)
        n_perception = math.floor(cfg.perception_ratio * len(ser_clips) + 0.5) if tasks else 0
        rng = random.Random(f"{cfg.seed}:{split}")
        for task, clip in _perception_picks(ser_clips, n_perception, tasks, rng, split):
            level = clip[PERCEPTION_COLUMNS[task]]
            examples.append(_example(clip, cfg, task, format_target(
                task, cfg.fmt, cfg.transcript_source, None, level, None), level=level))
        _assign_norms(examples[first:], cfg.population_norm_share,
                      random.Random(f"{cfg.seed}:{split}:prosody"))
        log.info("sft data %s: %d SER and %d perception examples from %d clips; left out %d "
                 "without a consensus label and %d without a kept rationale", split,
                 len(ser_clips), n_perception, len(in_split), no_label, no_rationale)
    return examples


def labelled_clips(examples: list[dict]) -> list[tuple[str, str]]:
    """(utt_id, label) of the SER examples, each clip once."""
    return list(dict.fromkeys((e["utt_id"], e["label"]) for e in examples if e["task"] == "ser"))


def perception_probes(ser_examples: list[dict], features: pd.DataFrame) -> list[dict]:
    """Every perception question with a measured answer for the clips of `ser_examples`: the
    check that the model hears prosody asks each clip all of them, not a sampled few."""
    levels = features.set_index("utt_id")
    probes = []
    for example in ser_examples:
        for task, (_, answers) in PERCEPTION_TASKS.items():
            level = levels.at[example["utt_id"], PERCEPTION_COLUMNS[task]]
            if level in answers:
                probes.append({**example, "task": task, "level": level, "label": None,
                               "rationale": None, "caption": None, "target": format_target(
                                   task, example["fmt"], example["transcript_source"], None,
                                   level, None)})
    return probes


def spread(n_items: int, n: int) -> list[int]:
    """`n` indices evenly spaced over `n_items` (all of them when n >= n_items). A split is
    stored in manifest order, clips grouped by speaker: its first n clips could be a single
    speaker's, these span them all."""
    if n >= n_items:
        return list(range(n_items))
    return [i * n_items // n for i in range(n)]


def example_prompt(example: dict, label_set: list[str] | tuple[str, ...], n_audio_tokens: int,
                   audio_token: str) -> list[dict]:
    """The chat messages of an example, with `n_audio_tokens` audio placeholders."""
    return build_prompt(example["task"], example["fmt"], example["transcript_source"],
                        example["transcript"], label_set, n_audio_tokens, audio_token,
                        prosody=example.get("caption"))


def split_summary(examples: list[dict]) -> dict:
    """Counts per split: examples per task, SER labels, perception levels, SER examples with
    a rationale, examples per prosody normalisation."""
    summary: dict = {"examples": len(examples), "tasks": {}, "labels": {}, "levels": {},
                     "with_rationale": {}, "prosody_norm": {}}
    for split in sorted({e["split"] for e in examples}):
        rows = [e for e in examples if e["split"] == split]
        ser = [e for e in rows if e["task"] == SER_TASK]
        summary["tasks"][split] = dict(sorted(Counter(e["task"] for e in rows).items()))
        summary["labels"][split] = dict(sorted(Counter(e["label"] for e in ser).items()))
        summary["levels"][split] = {
            task: dict(sorted(Counter(e["level"] for e in rows if e["task"] == task).items()))
            for task in sorted({e["task"] for e in rows} - {SER_TASK})
        }
        summary["with_rationale"][split] = sum(e["rationale"] is not None for e in ser)
        summary["prosody_norm"][split] = dict(sorted(Counter(e["prosody_norm"]
                                                             for e in rows).items()))
    return summary
