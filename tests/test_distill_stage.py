"""The distill stage: chain and fallbacks, planted faults, STaR, and the rationales gate (a
killed run resuming from the cache: test_resume.py)."""
from pathlib import Path

import pandas as pd

from components.config import DistillConfig, RationalesGateConfig, StarConfig, VerifyConfig
from components.distill.cache import GenerationCache
from components.distill.records import TeacherReply
from components.distill.stage import distill, load_cues, write_records
from components.distill.template import TemplateTeacher
from components.gates.rationales_gate import label_tv_distance, run_rationales_gate
from components.prepare.schema import ManifestMeta, write_manifest

LABELS = ["neutral", "happy", "sad", "angry"]
PROFILES = {  # levels that the template's label-free guess reads as each emotion
    "angry": dict(pitch_level="high", pitch_range_level="wide", energy_level="high",
                  rate_level="fast", pause_level="none", intonation="falling"),
    "sad": dict(pitch_level="low", pitch_range_level="narrow", energy_level="low",
                rate_level="slow", pause_level="many", intonation="flat"),
    "happy": dict(pitch_level="high", pitch_range_level="wide", energy_level="normal",
                  rate_level="normal", pause_level="none", intonation="rise-fall"),
    "neutral": dict(pitch_level="normal", pitch_range_level="normal", energy_level="normal",
                    rate_level="normal", pause_level="some", intonation="falling"),
}


def write_inputs(folder: Path, n: int = 16) -> tuple[Path, Path]:
    """A manifest and a features table (no audio needed) with `n` training clips."""
    rows, feats = [], []
    for i in range(n):
        label = LABELS[i % 4]
        votes = [label, label, LABELS[(i + 1) % 4]]
        rows.append({
            "utt_id": f"u{i:03d}", "corpus": "demo", "audio_path": f"a/u{i}.wav",
            "speaker": f"s{i % 4}", "gender": "female", "split": "train" if i < n - 2 else "test",
            "duration_s": 2.0, "sample_rate": 16000, "transcript": "The door is open now.",
            "label": label, "annotator_ids": ["r1", "r2", "r3"], "annotator_labels": votes,
            "label_distribution": "{}", "agreement": 2 / 3, "n_annotators": 3,
        })
        levels = PROFILES[label]
        feats.append({"utt_id": f"u{i:03d}", "transcript": "The door is open now.",
                      "prosody_caption": "pitch " + levels["pitch_level"], **levels,
                      "f0_median_hz": 200.0, "f0_range_st": 6.0, "energy_dbfs": -20.0,
                      "rate_sps": 4.5, "pause_ratio": 0.1, "jitter": 0.01, "shimmer": 0.05,
                      "hnr_db": 15.0, "duration_s": 2.0})
    manifest = folder / "manifest.parquet"
    write_manifest(pd.DataFrame(rows), ManifestMeta("demo", str(folder), LABELS), manifest)
    features = folder / "features.parquet"
    pd.DataFrame(feats).to_parquet(features, index=False)
    return manifest, features


class ScriptedTeacher:
    """A model-like backend whose texts are given per clip (planted faults)."""

    name = "scripted"

    def __init__(self, texts):
        self.texts, self.calls = texts, 0

    def config(self):
        return {"backend": self.name}

    def generate(self, requests):
        self.calls += len(requests)
        return [TeacherReply(self.texts.get(r.utt_id)) if r.utt_id in self.texts
                else TeacherReply(None, "HTTP 500: busy") for r in requests]


def test_template_chain_keeps_every_training_clip_with_checks(tmp_path):
    manifest, features = write_inputs(tmp_path)
    cues = load_cues(features, manifest, ["train"])
    assert len(cues) == 14 and cues[0].minority == ("happy",)
    records, summary = distill(cues, DistillConfig(), [TemplateTeacher()],
                               GenerationCache(tmp_path / "cache.jsonl"))
    assert summary["keep_rate"] == 1.0 and summary["kept_by_backend"] == {"template": 14}
    for record in records:
        assert record["kept"] and record["backend"] == "template"
        assert record["checks"]["grounding_ok"] and record["checks"]["implied_label"] == \
            record["label"]
        assert not record["rationale"].lower().startswith(record["label"])


def test_planted_faults_are_dropped_with_reasons_or_rescued_by_the_fallback(tmp_path):
    manifest, features = write_inputs(tmp_path)
    cues = {c.utt_id: c for c in load_cues(features, manifest, ["train"])}
    sad, angry = "u002", "u003"  # sad: low pitch, soft; angry: high, loud
    filler = " The speaker keeps the same manner all the way through this short sentence."
    texts = {
        sad: "The pitch is high and the voice is loud and fast, with no pauses at all, and "
             "everything about the delivery sounds low and sad." + filler,
        angry: "The answer is angry. The pitch is high, the voice is loud and the words come "
               "fast, so anger is what these cues show." + filler,
        "u000": "The pitch sits in a normal place and the loudness is normal too, so a calm "
                "and cheerful delight comes through: this is happiness." + filler,
    }
    scripted = ScriptedTeacher(texts)
    cfg = DistillConfig(retries=1)
    subset = [cues[u] for u in ("u000", sad, angry, "u001")]
    records, summary = distill(subset, cfg, [scripted], GenerationCache(tmp_path / "c.jsonl"))
    by_id = {r["utt_id"]: r for r in records}
    assert not any(r["kept"] for r in records)
    assert "claims high pitch" in by_id[sad]["reason"]
    assert by_id[sad]["checks"]["contradictions"]
    assert not by_id[angry]["checks"]["leakage_ok"]
    assert by_id["u000"]["checks"]["implied_label"] == "happy"  # argues for another emotion
    assert "consistency" in summary["failure_reasons"]
    assert by_id["u001"]["reason"].startswith("scripted: HTTP 500")
    assert scripted.calls == 8  # 4 clips x (1 try + 1 retry)
    rescued, summary = distill(subset, cfg, [ScriptedTeacher(texts), TemplateTeacher()],
                               GenerationCache(tmp_path / "c2.jsonl"))
    assert all(r["kept"] and r["backend"] == "template" for r in rescued)


def test_star_logs_kappa_keep_rate_and_rationalized_share(tmp_path):
    manifest, features = write_inputs(tmp_path, n=26)
    cues = load_cues(features, manifest, ["train"])
    cfg = DistillConfig(star=StarConfig(enabled=True, iterations=2))
    records, summary = distill(cues, cfg, [TemplateTeacher()], GenerationCache(tmp_path / "c"))
    first = summary["star"][0]
    assert first["clips"] == 24 and 0.0 <= first["keep_rate"] <= 1.0
    assert first["unhinted_accuracy"] > first["majority_rate"]  # clear prototypes
    assert first["kappa"] > 0.5 and not first["too_weak"]
    assert any(r["rationalized"] for r in records) or first["keep_rate"] == 1.0
    assert all(r["kept"] for r in records)


def test_rationales_gate_passes_then_fails_on_keep_rate_and_label_skew(tmp_path):
    manifest, features = write_inputs(tmp_path)
    cues = load_cues(features, manifest, ["train"])
    records, _ = distill(cues, DistillConfig(), [TemplateTeacher()],
                         GenerationCache(tmp_path / "c.jsonl"))
    path = tmp_path / "rationales.jsonl"
    write_records(records, path)
    cfg = RationalesGateConfig(rationales=str(path), manifest=str(manifest),
                               report_dir=str(tmp_path / "report"), min_keep_rate=0.8)
    assert run_rationales_gate(cfg, VerifyConfig(), ["train"]).success
    for record in records:  # drop every sad clip: a lower keep rate and a skewed distribution
        if record["label"] == "sad":
            record["kept"] = False
    write_records(records, path)
    failed = run_rationales_gate(cfg, VerifyConfig(), ["train"]).failed
    assert {f["column"] for f in failed} == {"kept_int", "label_tv_distance"}
    write_records(records[1:], path)  # a missing training clip
    failed = run_rationales_gate(cfg, VerifyConfig(), ["train"]).failed
    assert "expect_column_distinct_values_to_equal_set" in {f["expectation"] for f in failed}
    assert label_tv_distance(["a", "b"], ["a", "b"]) == 0.0
    assert label_tv_distance(["a"], ["b"]) == 1.0
