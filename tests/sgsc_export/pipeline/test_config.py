"""PipelineConfig: types, ranges, TOML, and the precedence command line > environment > file > defaults."""

from __future__ import annotations

import pytest

from sgsc_export.cli.pipeline.config import PipelineConfig, load_toml, resolve_config, to_toml
from sgsc_export.config import CompressConfig
from sgsc_export.errors import ConfigError


def test_defaults_and_preset():
    config, sources = resolve_config({}, {}, None)
    assert config == PipelineConfig()
    assert config.profiles == ("portable", "compact") and set(sources.values()) == {"default"}
    cc = config.compress_config()
    assert cc == CompressConfig()  # the defaults, the same for every data set
    assert PipelineConfig(dataset="mnist").compress_config() == CompressConfig()
    cc = PipelineConfig(preset="digits").compress_config()
    assert cc.steps == 1000 and cc.gamma == 0.5  # a starting point, asked for (sgsc_export.presets)
    assert PipelineConfig(steps=7, exclude=("a",)).compress_config().steps == 7
    with pytest.raises(ConfigError, match="unknown preset 'cifar'; choose one of digits, names, mnist"):
        PipelineConfig(preset="cifar")


def test_precedence_cli_over_env_over_file_over_defaults(tmp_path):
    f = tmp_path / "sgsc.toml"
    f.write_text('steps = 11\ngamma = 0.5\nlam = 0.25\nprofiles = ["compact"]\n')
    env = {"SGSC_GAMMA": "0.7", "SGSC_LAM": "0.125", "SGSC_LATENCY": "false"}
    config, sources = resolve_config({"lam": 0.0625}, env, f)
    assert config.steps == 11 and sources["steps"] == f"file {f}"          # file over defaults
    assert config.gamma == 0.7 and sources["gamma"] == "env SGSC_GAMMA"    # env over file
    assert config.lam == 0.0625 and sources["lam"] == "command line"       # command line over env
    assert config.profiles == ("compact",) and config.latency is False
    assert config.threads == 1 and sources["threads"] == "default"


def test_pipeline_table_in_toml(tmp_path):
    f = tmp_path / "sgsc.toml"
    f.write_text("[pipeline]\nseed = 3\n")
    assert load_toml(f) == {"seed": 3}


@pytest.mark.parametrize("text, message", [
    ("steps = 'many'\n", "expected an integer"),
    ("stepz = 3\n", "unknown key(s) ['stepz']"),
    ("steps = \n", "not valid TOML"),
    ("profiles = ['portable', 'tiny']\n", "profiles="),
    ("max_accuracy_drop = -1\n", "max_accuracy_drop=-1.0 is out of range"),
    ("layers = 1\n", "expected true or false"),
])
def test_bad_file_values_name_the_key(tmp_path, text, message):
    f = tmp_path / "sgsc.toml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=None) as info:
        resolve_config({}, {}, f)
    assert message in str(info.value)


def test_bad_environment_value_names_the_variable():
    with pytest.raises(ConfigError, match="SGSC_STEPS='abc': expected an integer"):
        resolve_config({}, {"SGSC_STEPS": "abc"}, None)
    with pytest.raises(ConfigError, match="SGSC_FORCE='maybe'"):
        resolve_config({}, {"SGSC_FORCE": "maybe"}, None)


def test_missing_file():
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_config({}, {}, "/nonexistent/sgsc.toml")


def test_toml_round_trip(tmp_path):
    config = PipelineConfig(dataset="mnist", out="runs/x", steps=5, exclude=("fc",), layers=True)
    f = tmp_path / "sgsc.toml"
    f.write_text(to_toml(config, fill_preset=False))
    assert resolve_config({}, {}, f)[0] == config
    f.write_text(to_toml(PipelineConfig()))  # preset values filled in: still loads, same compression config
    assert resolve_config({}, {}, f)[0].compress_config() == PipelineConfig().compress_config()
