"""The `emoreason` command: stage options, defaults from params, clear errors and exit codes."""
import json

import pandas as pd
import pytest
import yaml

from components.cli import build_parser, main
from tests.conftest import require_shared
from tests.corpus_fixtures import write_ravdess_fixture


def test_every_stage_has_help():
    parser = build_parser()
    for argv in (["prepare", "--help"], ["gate", "manifest", "--help"], ["features", "--help"],
                 ["gate", "features", "--help"], ["distill", "--help"],
                 ["gate", "rationales", "--help"], ["model", "prepare", "--help"],
                 ["flow", "--help"]):
        with pytest.raises(SystemExit) as exit_:
            parser.parse_args(argv)
        assert exit_.value.code == 0


def test_prepare_then_gate_on_a_ravdess_fixture(tmp_path, capsys):
    corpus = write_ravdess_fixture(tmp_path / "ravdess", actors=tuple(range(1, 13)))
    out = tmp_path / "out"
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"manifest_gate": {"out": str(tmp_path / "gated"),
                                                        "report_dir": str(tmp_path / "rep")}}))
    assert main(["--params", str(params), "prepare", "--corpus", "ravdess",
                 "--data-dir", str(corpus), "--out", str(out)]) == 0
    df = pd.read_parquet(out / "manifest.parquet")
    assert df["speaker"].nunique() == 12
    assert (df.groupby("speaker")["split"].nunique() == 1).all()
    assert json.loads((out / "manifest.json").read_text())["corpus"] == "ravdess"
    assert main(["--params", str(params), "gate", "manifest",
                 "--manifest", str(out / "manifest.parquet")]) == 0
    assert "manifest gate: passed" in capsys.readouterr().out
    assert len(pd.read_parquet(tmp_path / "gated" / "manifest.parquet")) == len(df)


def test_errors_are_clear_and_exit_non_zero(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text("prepare:\n  corpsu: demo\n")
    assert main(["--params", str(params), "prepare"]) == 2
    assert "unknown key prepare.corpsu" in capsys.readouterr().err
    params.write_text("{}\n")
    assert main(["--params", str(params), "prepare", "--corpus", "ravdess",
                 "--data-dir", str(tmp_path / "nope")]) == 1
    assert "data folder not found" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["--params", str(params), "prepare", "--corpus", "iemocap",
                 "--data-dir", str(tmp_path / "empty")]) == 1
    assert "error" in capsys.readouterr().err
    assert main(["--params", str(params), "prepare", "--corpus", "nocorpus",
                 "--data-dir", str(tmp_path / "empty")]) == 1
    assert "nocorpus" in capsys.readouterr().err
    assert main(["--params", str(params), "gate", "manifest",
                 "--manifest", str(tmp_path / "missing.parquet")]) == 1


@pytest.mark.realdata
def test_real_ravdess_dev_gives_720_rows_12_speakers_disjoint_splits(tmp_path):
    ravdess = require_shared("ravdess-dev")
    params = tmp_path / "params.yaml"
    params.write_text("{}\n")
    out = tmp_path / "out"
    assert main(["--params", str(params), "prepare", "--corpus", "ravdess",
                 "--data-dir", str(ravdess), "--out", str(out)]) == 0
    df = pd.read_parquet(out / "manifest.parquet")
    assert len(df) == 720 and df["speaker"].nunique() == 12
    assert (df.groupby("speaker")["split"].nunique() == 1).all()
    assert df["label"].nunique() == 8 and (df["sample_rate"] == 16000).all()
