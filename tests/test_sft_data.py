"""The SFT mix: which clips become SER examples, and how perception examples are drawn."""
import logging
import math
from collections import Counter

import pandas as pd
import pytest

from components.speechlm.formats import PERCEPTION_TASKS, parse_output
from components.speechlm.sft_data import (
    SftDataConfig,
    build_sft_examples,
    example_prompt,
    perception_probes,
    shorten,
    split_summary,
    spread,
)

LABELS = ("neutral", "happy", "sad", "angry")
PITCH = ("low", "normal", "high")
RATE = ("slow", "normal", "fast")
CONTOURS = ("rising", "falling", "flat", "rise-fall")


def _clip(i: int, split: str) -> dict:
    return {"utt_id": f"u{i:03d}", "split": split, "label": LABELS[i % 4],
            "transcript": f"sentence number {i}", "pitch_level": PITCH[i % 3],
            "energy_level": PITCH[(i + 1) % 3], "rate_level": RATE[i % 3],
            "intonation": CONTOURS[i % 4]}


@pytest.fixture
def data():
    """40 train, 12 dev and 12 test clips; every label has a kept rationale on train."""
    clips = [_clip(i, "train") for i in range(40)] + [_clip(i, "dev") for i in range(40, 52)] \
        + [_clip(i, "test") for i in range(52, 64)]
    manifest = pd.DataFrame([{k: c[k] for k in ("utt_id", "split", "label")} for c in clips])
    manifest["annotator_labels"] = [[c["label"]] * 3 for c in clips]
    features = pd.DataFrame([{k: v for k, v in c.items() if k != "label"} for c in clips])
    rationales = [{"utt_id": c["utt_id"], "label": c["label"], "kept": True,
                   "rationale": f"The pitch is {c['pitch_level']}. Clip {c['utt_id']}.",
                   "backend": "template", "checks": {}, "reason": "", "minority": []}
                  for c in clips if c["split"] == "train"]
    return features, manifest, rationales


def _count(examples, split, task=None):
    return sum(e["split"] == split and (task is None or e["task"] == task) for e in examples)


def test_ser_examples_and_contract(data):
    features, manifest, rationales = data
    examples = build_sft_examples(features, manifest, rationales,
                                  SftDataConfig(perception_ratio=0, splits=["train"],
                                                population_norm_share=0))
    assert len(examples) == 40 and {e["task"] for e in examples} == {"ser"}
    first = examples[0]
    assert first == {
        "utt_id": "u000", "split": "train", "task": "ser", "fmt": "explain_after",
        "transcript_source": "asr", "transcript": "sentence number 0",
        "target": "Emotion: neutral\nRationale: The pitch is low. Clip u000.",
        "label": "neutral", "level": None, "rationale": "The pitch is low. Clip u000.",
        "caption": None, "prosody_norm": "speaker",
    }
    assert not {"image", "images"} & set(first)
    assert [e["utt_id"] for e in examples] == list(manifest["utt_id"][:40])


@pytest.mark.parametrize("fmt, source", [("explain_after", "model"), ("reason_first", "asr"),
                                         ("reason_first", "model")])
def test_targets_follow_the_configured_format(data, fmt, source):
    features, manifest, rationales = data
    cfg = SftDataConfig(fmt=fmt, transcript_source=source, perception_ratio=0)
    for example in build_sft_examples(features, manifest, rationales, cfg):
        parsed = parse_output(example["target"], fmt, LABELS,
                              require_transcript=source == "model")
        assert parsed["well_formed"] and parsed["label"] == example["label"]
        assert parsed["rationale"] == example["rationale"]
        assert parsed["transcript"] == (example["transcript"] if source == "model" else None)


@pytest.mark.parametrize("ratio", [0.25, 0.5, 1.0, 1.3, 2.0])
def test_perception_count_follows_the_ratio_per_split(data, ratio):
    features, manifest, rationales = data
    cfg = SftDataConfig(perception_ratio=ratio, splits=["train", "dev", "test"])
    examples = build_sft_examples(features, manifest, rationales, cfg)
    for split in ("train", "dev", "test"):
        n_ser = _count(examples, split, "ser")
        assert _count(examples, split) - n_ser == math.floor(ratio * n_ser + 0.5)
    # tasks are taken in turn: no task has more than one example more than another
    train_tasks = Counter(e["task"] for e in examples if e["split"] == "train"
                          and e["task"] != "ser")
    assert max(train_tasks.values()) - min(train_tasks.values()) <= 1
    assert set(train_tasks) == set(PERCEPTION_TASKS)


def test_perception_examples_answer_with_the_measured_level(data):
    features, manifest, rationales = data
    examples = build_sft_examples(features, manifest, rationales,
                                  SftDataConfig(perception_ratio=2.0))
    by_id = features.set_index("utt_id")
    columns = {"pitch": "pitch_level", "energy": "energy_level", "rate": "rate_level",
               "intonation": "intonation"}
    perception = [e for e in examples if e["task"] != "ser"]
    assert len(perception) == 80
    for e in perception:
        assert e["target"] == e["level"] == by_id.loc[e["utt_id"], columns[e["task"]]]
        assert e["label"] is None and e["rationale"] is None
    pairs = [(e["utt_id"], e["task"]) for e in perception]
    assert len(set(pairs)) == len(pairs)


def test_deterministic_for_a_seed(data):
    features, manifest, rationales = data
    cfg = SftDataConfig(perception_ratio=0.5, splits=["train", "dev"], seed=7)
    first = build_sft_examples(features, manifest, rationales, cfg)
    assert build_sft_examples(features, manifest, rationales, cfg) == first
    other = build_sft_examples(features, manifest, rationales,
                               SftDataConfig(perception_ratio=0.5, splits=["train", "dev"],
                                             seed=8))
    assert len(other) == len(first)
    assert [e["utt_id"] for e in other if e["task"] != "ser"] != \
        [e["utt_id"] for e in first if e["task"] != "ser"]


def test_unmeasured_levels_are_never_answers(data):
    features, manifest, rationales = data
    features = features.copy()
    features.loc[features.index[:30], "pitch_level"] = "unknown"
    features.loc[features.index[:20], "intonation"] = "uncertain"
    features.loc[features.index[20:40], "intonation"] = "too_short"
    examples = build_sft_examples(features, manifest, rationales,
                                  SftDataConfig(perception_ratio=1.0))
    perception = [e for e in examples if e["task"] != "ser"]
    assert len(perception) == 40
    assert all(e["level"] in PERCEPTION_TASKS[e["task"]][1] for e in perception)
    tasks = Counter(e["task"] for e in perception)
    assert tasks["pitch"] == 10 and "intonation" not in tasks     # only 10 measured pitches
    assert tasks["energy"] + tasks["rate"] == 30


def test_a_ratio_beyond_the_measured_pairs_is_an_error(data):
    features, manifest, rationales = data
    with pytest.raises(ValueError, match="only 160 .clip, task. pairs"):
        build_sft_examples(features, manifest, rationales, SftDataConfig(perception_ratio=4.5))


def test_training_uses_only_kept_rationales(data):
    features, manifest, rationales = data
    for record in rationales[:5]:
        record.update(kept=False, reason="grounding", rationale="Loud and fast, so angry.")
    rationales = rationales[5:] + rationales[:5]
    cfg = SftDataConfig(perception_ratio=0, splits=["train", "dev"])
    examples = build_sft_examples(features, manifest, rationales, cfg)
    train = [e for e in examples if e["split"] == "train"]
    assert len(train) == 35 and all(e["rationale"] for e in train)
    assert {e["utt_id"] for e in train}.isdisjoint({f"u{i:03d}" for i in range(5)})
    assert "Loud and fast" not in "".join(e["target"] for e in examples)
    # evaluation splits keep every labelled clip, with a label-only target
    dev = [e for e in examples if e["split"] == "dev"]
    assert len(dev) == 12 and all(e["rationale"] is None for e in dev)
    assert dev[0]["target"] == f"Emotion: {dev[0]['label']}"

    cfg.label_only_fallback = True
    train = [e for e in build_sft_examples(features, manifest, rationales, cfg)
             if e["split"] == "train"]
    assert len(train) == 40
    assert train[0]["rationale"] is None and train[0]["target"] == "Emotion: neutral"


def test_clips_without_consensus_are_left_out_and_logged(data, caplog):
    features, manifest, rationales = data
    manifest = manifest.copy()
    manifest.loc[manifest.index[:4], "label"] = ""
    rationales = [r for r in rationales if r["utt_id"] not in {"u000", "u001", "u002", "u003"}]
    with caplog.at_level(logging.INFO, logger="components.speechlm.sft_data"):
        examples = build_sft_examples(features, manifest, rationales,
                                      SftDataConfig(perception_ratio=0.5))
    assert _count(examples, "train", "ser") == 36 and _count(examples, "train") == 54
    assert "36 SER and 18 perception examples from 40 clips; left out 4 without a consensus " \
        "label and 0 without a kept rationale" in caplog.text


def test_ratio_zero_needs_no_level_columns(data):
    features, manifest, rationales = data
    features = features[["utt_id", "transcript"]]
    examples = build_sft_examples(features, manifest, rationales,
                                  SftDataConfig(perception_ratio=0, splits=["train", "test"]))
    assert {e["task"] for e in examples} == {"ser"} and len(examples) == 52


def test_long_rationales_are_cut_at_a_sentence_end_and_keep_their_conclusion(data):
    features, manifest, rationales = data
    rationales[0]["rationale"] = "One two three. Four five six seven. So it is sad."
    examples = build_sft_examples(features, manifest, rationales,
                                  SftDataConfig(perception_ratio=0, max_rationale_words=8))
    assert examples[0]["rationale"] == "One two three. So it is sad."
    assert shorten("One two three four five six. End.", 4) == "One two three four"
    assert shorten("a b c d e f", 4) == "a b c d"
    assert shorten(" short  one ", None) == "short one"


@pytest.mark.parametrize("change, message", [
    ({"perception_ratio": -0.5}, "perception_ratio"),
    ({"perception_ratio": float("nan")}, "perception_ratio"),
    ({"perception_tasks": ["pitch", "gender"]}, "unknown perception tasks"),
    ({"perception_tasks": ["pitch", "pitch"]}, "repeats"),
    ({"perception_tasks": []}, "at least one perception task"),
    ({"fmt": "json"}, "unknown target format"),
    ({"transcript_source": "human"}, "unknown transcript_source"),
    ({"splits": []}, "splits is empty"),
    ({"max_rationale_words": 0}, "max_rationale_words"),
])
def test_bad_config(data, change, message):
    with pytest.raises(ValueError, match=message):
        build_sft_examples(*data, SftDataConfig(**change))


def test_inconsistent_inputs_are_errors(data):
    features, manifest, rationales = data
    with pytest.raises(ValueError, match="manifest's label is 'neutral'"):
        build_sft_examples(features, manifest, [{**rationales[0], "label": "sad"}],
                           SftDataConfig())
    with pytest.raises(ValueError, match="features lack 1 clips"):
        build_sft_examples(features[features["utt_id"] != "u005"], manifest, rationales,
                           SftDataConfig())
    with pytest.raises(ValueError, match="two kept rationales"):
        build_sft_examples(features, manifest, rationales + rationales[:1], SftDataConfig())
    with pytest.raises(ValueError, match="lacks columns .'pitch_level'."):
        build_sft_examples(features.drop(columns=["pitch_level"]), manifest, rationales,
                           SftDataConfig())
    with pytest.raises(ValueError, match="rationale record 0 lacks .'kept'."):
        build_sft_examples(features, manifest, [{"utt_id": "u000", "label": "neutral",
                                                 "rationale": "x"}], SftDataConfig())


def test_split_summary(data):
    features, manifest, rationales = data
    examples = build_sft_examples(features, manifest, rationales,
                                  SftDataConfig(perception_ratio=0.5, splits=["train", "dev"]))
    summary = split_summary(examples)
    assert summary["examples"] == len(examples) == 40 + 20 + 12 + 6
    assert summary["tasks"]["train"] == {"energy": 5, "intonation": 5, "pitch": 5, "rate": 5,
                                         "ser": 40}
    assert summary["labels"]["train"] == {label: 10 for label in sorted(LABELS)}
    assert summary["labels"]["dev"] == {"angry": 3, "happy": 3, "neutral": 3, "sad": 3}
    assert sum(summary["levels"]["dev"]["pitch"].values()) == summary["tasks"]["dev"]["pitch"]
    assert summary["with_rationale"] == {"dev": 0, "train": 40}


def test_example_prompt(data):
    features, manifest, rationales = data
    examples = build_sft_examples(features, manifest, rationales,
                                  SftDataConfig(perception_ratio=0.5))
    ser = next(e for e in examples if e["task"] == "ser")
    user = example_prompt(ser, LABELS, 12, "<|audio|>")[1]["content"]
    assert user.count("<|audio|>") == 12 and f"Transcript: {ser['transcript']}" in user
    pitch = next(e for e in examples if e["task"] == "pitch")
    user = example_prompt(pitch, LABELS, 3, "<|audio|>")[1]["content"]
    assert "pitch level: low, normal or high?" in user and pitch["transcript"] not in user


def test_prosody_caption_reaches_ser_prompts_only(data):
    """With `prosody_caption` a SER prompt reads the measured levels in words; a perception
    prompt, whose answer is one of those levels, does not (nor does a probe made from a SER
    example that had one)."""
    features, manifest, rationales = data
    features = features.assign(prosody_caption=[f"pitch {p}; rate {r}" for p, r in zip(
        features["pitch_level"], features["rate_level"])])
    examples = build_sft_examples(features, manifest, rationales,
                                  SftDataConfig(perception_ratio=0.5, prosody_caption=True))
    ser = [e for e in examples if e["task"] == "ser"]
    heard = [e for e in examples if e["task"] != "ser"]
    assert ser and heard
    for e in ser:
        caption = features.set_index("utt_id").at[e["utt_id"], "prosody_caption"]
        assert e["caption"] == caption
        assert f"How it is said: {caption}" in example_prompt(e, LABELS, 4, "<|audio|>")[1]["content"]
    for e in heard + perception_probes(ser, features):
        assert e["caption"] is None
        assert "How it is said" not in example_prompt(e, LABELS, 4, "<|audio|>")[1]["content"]
    off = build_sft_examples(features, manifest, rationales, SftDataConfig(perception_ratio=0))
    assert all(e["caption"] is None for e in off)
    assert "How it is said" not in example_prompt(off[0], LABELS, 4, "<|audio|>")[1]["content"]
    with pytest.raises(ValueError, match="prosody_caption"):
        build_sft_examples(features.drop(columns="prosody_caption"), manifest, rationales,
                           SftDataConfig(prosody_caption=True))


def test_perception_probes_ask_every_measured_question(data):
    features, manifest, rationales = data
    features = features.copy()
    features.loc[features["utt_id"] == "u040", "pitch_level"] = "unknown"
    dev = [e for e in build_sft_examples(features, manifest, rationales,
                                         SftDataConfig(perception_ratio=0.0, splits=["dev"]))]
    probes = perception_probes(dev, features)
    assert len(probes) == 4 * len(dev) - 1  # every task for every clip, unmeasured left out
    levels = features.set_index("utt_id")
    for probe in probes:
        column = {"pitch": "pitch_level", "energy": "energy_level", "rate": "rate_level",
                  "intonation": "intonation"}[probe["task"]]
        assert probe["level"] == levels.at[probe["utt_id"], column] == probe["target"]
        assert probe["label"] is None and probe["split"] == "dev"


def test_evaluation_clips_span_the_split():
    """Dev clips are stored speaker by speaker: a subset of them must not be one speaker's."""
    speakers = [f"spk{i // 60}" for i in range(120)]  # two speakers, 60 clips each
    picked = spread(len(speakers), 60)
    assert len(set(picked)) == 60 and picked == sorted(picked)
    assert {speakers[i] for i in picked} == {"spk0", "spk1"}
    assert spread(5, 10) == [0, 1, 2, 3, 4] and spread(0, 3) == []


@pytest.mark.parametrize("share", [0.0, 0.3, 0.5, 1.0])
def test_population_norm_share_is_honoured_per_split(data, share):
    features, manifest, rationales = data
    cfg = SftDataConfig(perception_ratio=0.5, splits=["train", "dev"], population_norm_share=share)
    examples = build_sft_examples(features, manifest, rationales, cfg)
    assert {e["prosody_norm"] for e in examples} <= {"speaker", "population"}
    for split, n in (("train", 60), ("dev", 18)):
        rows = [e for e in examples if e["split"] == split]
        assert len(rows) == n
        assert sum(e["prosody_norm"] == "population" for e in rows) == math.floor(share * n + 0.5)
    assert split_summary(examples)["prosody_norm"]["dev"].get("population", 0) == \
        math.floor(share * 18 + 0.5)


def test_population_normalised_examples_are_drawn_with_the_seed(data):
    features, manifest, rationales = data

    def marked(seed):
        cfg = SftDataConfig(perception_ratio=0.5, population_norm_share=0.3, seed=seed)
        return [(e["utt_id"], e["task"]) for e in build_sft_examples(
            features, manifest, rationales, cfg) if e["prosody_norm"] == "population"]

    assert marked(7) == marked(7) and len(marked(7)) == 18
    assert marked(7) != marked(8)
    tasks = Counter(task for _, task in marked(7))
    assert tasks["ser"] and sum(tasks.values()) > tasks["ser"]  # perception examples too


@pytest.mark.parametrize("share", [-0.1, 1.5, float("nan")])
def test_population_norm_share_out_of_range_is_an_error(data, share):
    with pytest.raises(ValueError, match="population_norm_share"):
        build_sft_examples(*data, SftDataConfig(population_norm_share=share))
