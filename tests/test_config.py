"""params.yaml loads into typed dataclasses; typos and wrong types are errors naming the key."""
import dataclasses

import pytest
import yaml

from components.config import ConfigError, DemoConfig, Params, load_params, params_from_dict
from tests.conftest import REPO


def test_repository_params_load_and_match_defaults_where_documented():
    params = load_params(REPO / "params.yaml")
    assert isinstance(params, Params)
    assert params.prepare.corpus == "demo"
    assert params.prepare.demo.n_clips == 200
    assert params.manifest_gate.manifest == f"{params.prepare.out}/manifest.parquet"


@pytest.mark.parametrize("data, message", [
    ({"prepare": {"corpuss": "demo"}}, "unknown key prepare.corpuss"),
    ({"nosection": {}}, "unknown key nosection"),
    ({"prepare": {"demo": {"n_clips": "many"}}}, "prepare.demo.n_clips: expected an integer"),
    ({"prepare": {"demo": {"n_clips": True}}}, "prepare.demo.n_clips: expected an integer"),
    ({"base": {"labels": ["sad", 3]}}, "base.labels[1]: expected a string"),
    ({"manifest_gate": {"max_quarantine_share": "x"}}, "max_quarantine_share: expected a number"),
    ({"prepare": {"split": {"by_gender": "yes"}}}, "by_gender: expected true or false"),
    ({"prepare": {"label_map": ["calm"]}}, "prepare.label_map: expected a mapping"),
    ({"prepare": {"label_map": {"calm": 1}}}, "prepare.label_map.calm: expected a string, got 1"),
    ({"prepare": {"label_map": {1: "calm"}}}, "prepare.label_map key: expected a string, got 1"),
    ({"prepare": None}, "prepare: expected a mapping, got NoneType"),
    ({"sft": {"lerning_rate": 0.1}}, "unknown key sft.lerning_rate (known: "),
    ({"sft": {"learning_rate": "abc"}}, "sft.learning_rate: expected a number, got 'abc'"),
    ({"distill": {"teacher": {"top_p": [0.9]}}}, "distill.teacher.top_p: expected a number, got [0.9]"),
    ({"rl": {"splits": ["train", "test"]}}, "rl.splits must name train and/or dev once each"),
    ({"rl": {"splits": []}}, "rl.splits must name train and/or dev once each"),
    ({"rl": {"splits": ["dev", "dev"]}}, "rl.splits must name train and/or dev once each"),
    ({"rl": {"max_uniform_group": 0.0}}, "rl.max_uniform_group must be in (0, 1]"),
    ({"rl": {"max_uniform_group": 1.5}}, "rl.max_uniform_group must be in (0, 1]"),
    ({"sft": {"label_smoothing": 1.0}}, "sft.label_smoothing must be in [0, 1), got 1.0"),
    ({"sft": {"label_smoothing": -0.1}}, "sft.label_smoothing must be in [0, 1), got -0.1"),
])
def test_bad_params_name_the_key(data, message):
    with pytest.raises(ConfigError) as err:
        params_from_dict(data)
    assert message in str(err.value)


def test_ints_are_accepted_for_floats_and_optional_values(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"manifest_gate": {"max_duration_s": 20},
                                    "base": {"labels": None}, "prepare": {"data_dir": "x"}}))
    params = load_params(path)
    assert params.manifest_gate.max_duration_s == 20.0
    assert isinstance(params.manifest_gate.max_duration_s, float)
    assert params.base.labels is None and params.prepare.data_dir == "x"


def test_malformed_yaml_is_a_config_error(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("prepare: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(path)
    path.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping of sections"):
        load_params(path)


def test_every_bad_key_is_named_in_one_error():
    with pytest.raises(ConfigError) as err:
        params_from_dict({"prepare": {"demo": {"n_clips": "many"}, "corpuss": "demo"},
                          "sft": {"learning_rate": "abc", "epochs": 1.5}, "tracking": {}})
    for message in ("prepare.demo.n_clips: expected an integer", "unknown key prepare.corpuss",
                    "sft.learning_rate: expected a number", "sft.epochs: expected an integer"):
        assert message in str(err.value)


def test_sections_made_in_code_are_validated_too():
    sft = Params().sft
    assert isinstance(dataclasses.replace(sft, learning_rate=1).learning_rate, float)
    with pytest.raises(ValueError, match="learning_rate"):
        dataclasses.replace(sft, learning_rate="abc")
    with pytest.raises(ValueError, match="n_clips"):
        DemoConfig(n_clips=True)
    with pytest.raises(ValueError, match="n_speaker"):
        DemoConfig(n_speaker=3)
