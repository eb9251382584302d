import pytest

from harness.config import BackboneConfig, SuiteSpec, load_model, parse_overrides, validate
from harness.errors import ConfigError, UnknownNameError
from harness.plan.suites import builtin_suites, load_suite


def write(tmp_path, text):
    path = tmp_path / "suite.yaml"
    path.write_text(text)
    return path


GOOD = """
name: s
entries:
  - task: fsc
    datasets: [mini_coop]
    grid: {shots: [1, 2], seed: [1]}
"""


def test_suite_yaml_loads(tmp_path):
    spec = load_model(SuiteSpec, write(tmp_path, GOOD))
    assert spec.entries[0].grid == {"shots": [1, 2], "seed": [1]}


def test_unknown_key_is_an_error_naming_the_key(tmp_path):
    path = write(tmp_path, GOOD.replace("grid:", "gird:"))
    with pytest.raises(ConfigError) as exc:
        load_model(SuiteSpec, path)
    assert "'entries.0.gird': unknown key" in str(exc.value)
    assert str(path) in str(exc.value)


def test_bad_value_names_the_key():
    with pytest.raises(ConfigError, match="'batch_size'"):
        validate(BackboneConfig, {"name": "resnet", "batch_size": 0}, "cfg")
    with pytest.raises(ConfigError, match="'dtype'"):
        validate(BackboneConfig, {"name": "resnet", "dtype": "fp8"}, "cfg")


def test_empty_grid_axis_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="grid axis 'seed' is empty"):
        load_model(SuiteSpec, write(tmp_path, GOOD.replace("seed: [1]", "seed: []")))


def test_malformed_yaml_names_line(tmp_path):
    with pytest.raises(ConfigError, match="malformed YAML.*line"):
        load_model(SuiteSpec, write(tmp_path, "name: s\nentries: [\n  - {task: fsc"))


def test_overrides_parse_yaml_scalars():
    assert parse_overrides(["shots=16", "lr=1e-4", "head=linear-probe", "flag=true"]) == {
        "shots": 16, "lr": 1e-4, "head": "linear-probe", "flag": True}
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_overrides(["shots"])


def test_builtin_suites_validate():
    assert {"mini", "all"} <= set(builtin_suites())
    for name in builtin_suites():
        assert load_suite(name).name == name


def test_unknown_suite_lists_close_matches():
    with pytest.raises(UnknownNameError, match="did you mean: mini"):
        load_suite("minii")
