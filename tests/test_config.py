"""params.yaml loads into typed dataclasses; typos and wrong types are errors naming the key."""
import pytest
import yaml

from components.config import ConfigError, Params, load_params, params_from_dict
from tests.conftest import REPO


def test_repository_params_load_and_match_defaults_where_documented():
    params = load_params(REPO / "params.yaml")
    assert isinstance(params, Params)
    assert params.prepare.corpus == "demo"
    assert params.prepare.demo.n_clips == 300
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
