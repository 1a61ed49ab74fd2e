"""Gates that gate: every stage after the features gate reads the set it let through and
depends on it in dvc.yaml, so a quarantined clip reaches no teacher, no training and no score;
SFT trains only on rationales that were kept."""
import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from components.cli import main
from components.config import Params, load_params
from components.prepare.schema import ManifestMeta, write_manifest
from tests.conftest import REPO
from tests.test_distill_stage import PROFILES
from tests.test_features_gate import measured
from tests.test_manifest_gate import LABELS, SPEAKERS, make_row

READERS = ("distill", "rationales_gate", "sft", "zeroshot", "evaluate")
"""The stages after the features gate that read a manifest."""
QUARANTINED = {"spk1_1": 900.0, "spk4_1": 20.0}
"""A training clip and a test clip whose F0 median the features gate rejects."""


@pytest.fixture
def project(tmp_path, monkeypatch):
    """The gated manifest and features of 48 clips where the repository's params.yaml expects
    them (12 per speaker: two quarantined stay under features_gate.max_unusable_share)."""
    monkeypatch.chdir(tmp_path)
    params = load_params(REPO / "params.yaml")
    rows, feats = [], []
    for spk in SPEAKERS:
        for i in range(12):
            utt_id, label = f"{spk}_{i}", LABELS[i % 4]
            rows.append(make_row(utt_id, spk, [label, label, LABELS[(i + 1) % 4]]))
            feats.append({**measured(utt_id, spk, QUARANTINED.get(utt_id, 180.0)),
                          **PROFILES[label], "prosody_caption": "pitch " + PROFILES[label][
                              "pitch_level"], "f0_range_st": 6.0, "jitter": 0.01,
                          "shimmer": 0.05, "hnr_db": 15.0})
    write_manifest(pd.DataFrame(rows), ManifestMeta("demo", str(tmp_path), LABELS),
                   params.features_gate.manifest)
    features = tmp_path / params.features_gate.features
    features.parent.mkdir(parents=True)
    pd.DataFrame(feats).to_parquet(features, index=False)
    return params


def _emoreason(*args: str) -> int:
    return main(["--params", str(REPO / "params.yaml"), *args])


def _records(params: Params) -> list[dict]:
    return [json.loads(line) for line in
            Path(params.distill.out, "rationales.jsonl").read_text().splitlines()]


def test_a_clip_quarantined_by_the_features_gate_reaches_no_later_stage(project):
    from components.evaluate.stage import evaluation_rows
    from components.speechlm.train import sft_examples
    from components.speechlm.zeroshot import dev_clips

    params = project
    assert _emoreason("gate", "features") == 0
    quarantine = pd.read_csv(params.features_gate.report_dir + "/quarantine.csv")
    assert quarantine["utt_id"].tolist() == sorted(QUARANTINED)
    assert quarantine["audio_path"].tolist() == [f"audio/{u}.wav" for u in sorted(QUARANTINED)]

    assert _emoreason("distill") == 0
    records = _records(params)
    distilled = {r["utt_id"] for r in records}
    trained_on = {f"spk{s}_{i}" for s in (1, 2) for i in range(12)} - set(QUARANTINED)
    assert distilled == trained_on and all(r["kept"] for r in records)
    # the rationales gate expects the gated training clips: it passes on distill's output
    assert _emoreason("gate", "rationales") == 0

    train, dev, *_ = sft_examples(params.sft, params.base.seed)
    assert {e["utt_id"] for e in train} == trained_on
    assert not {e["utt_id"] for e in train + dev} & set(QUARANTINED)
    zeroshot_dev, *_ = dev_clips(params.zeroshot.features, params.zeroshot.manifest, 60)
    assert not set(zeroshot_dev["utt_id"]) & set(QUARANTINED)
    rows, evaluated, _ = evaluation_rows(params.evaluate.features, params.evaluate.manifest,
                                         params.evaluate.split)
    assert "spk4_1" not in set(evaluated["utt_id"]) and len(evaluated) == 11
    assert not set(rows["utt_id"]) & set(QUARANTINED)


def test_sft_trains_only_on_rationales_that_were_kept(project):
    from components.speechlm.train import sft_examples

    params = project
    assert _emoreason("gate", "features") == 0
    assert _emoreason("distill") == 0
    records = _records(params)
    dropped = records[0]["utt_id"]
    records[0].update(kept=False, reason="grounding")
    Path(params.distill.out, "rationales.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in records))
    train, *_ = sft_examples(params.sft, params.base.seed)
    assert dropped not in {e["utt_id"] for e in train}
    assert {e["utt_id"] for e in train if e["task"] == "ser"} == \
        {r["utt_id"] for r in records[1:]}


def _outs(stage: dict) -> list[str]:
    return [next(iter(o)) if isinstance(o, dict) else o for o in stage.get("outs", [])]


def test_dvc_stages_after_a_gate_depend_on_what_it_let_through():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    producer = {out: name for name, stage in stages.items() for out in _outs(stage)}

    def upstream(name: str) -> set[str]:
        found = set()
        for dep in stages[name].get("deps", []):
            for out, stage in producer.items():
                if dep == out or dep.startswith(out + "/"):
                    found |= {stage} | upstream(stage)
        return found

    params, defaults = load_params(REPO / "params.yaml"), Params()
    gated_dir = params.features_gate.out
    assert gated_dir in _outs(stages["features_gate"])
    order = list(stages)
    for name in order[order.index("features_gate") + 1:]:
        assert "features_gate" in upstream(name), name
    for name in READERS:
        assert getattr(params, name).manifest == f"{gated_dir}/manifest.parquet", name
        assert getattr(defaults, name).manifest == getattr(params, name).manifest, name
        assert gated_dir in stages[name]["deps"], name
        assert params.manifest_gate.out not in stages[name]["deps"], name
    for name in ("sft", "evaluate", "register"):
        assert "rationales_gate" in upstream(name), name
    # the gate's verdict, not its whole report folder (whose HTML pages record run times)
    assert "reports/rationales_gate/result.json" in stages["sft"]["deps"]
