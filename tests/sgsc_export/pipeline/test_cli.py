"""`sgsc pipeline` and `sgsc config` through click's CliRunner: help, error paths, config precedence."""

from __future__ import annotations

import pytest

from sgsc_export.cli.pipeline.config import tomllib
from tests.sgsc_export.conftest import run_cli

COMMANDS = ["compress", "export", "inspect", "validate", "pipeline", "config"]


def test_root_help_lists_every_command():
    result = run_cli("--help")
    assert result.exit_code == 0
    for name in COMMANDS:
        assert name in result.output


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_has_help(name):
    result = run_cli(name, "--help")
    assert result.exit_code == 0, result.output
    assert "Usage: " in result.output and "(unavailable:" not in result.output


def test_pipeline_help_names_every_key_and_variable():
    from sgsc_export.cli.pipeline.config import PipelineConfig, env_name, option_name

    text = " ".join(run_cli("pipeline", "--help").output.split())
    for key in PipelineConfig.__dataclass_fields__:
        assert option_name(key) in text and env_name(key) in text and f"key {key};" in text, key


def test_print_defaults_is_loadable_toml(tmp_path):
    result = run_cli("config", "--print-defaults")
    assert result.exit_code == 0
    data = tomllib.loads(result.output)
    assert data["dataset"] == "digits" and data["profiles"] == ["portable", "compact"] and "epochs" in data
    assert "steps" not in data  # decided by the training split's size (CompressConfig.schedule)
    f = tmp_path / "sgsc.toml"
    f.write_text(result.output)
    again = run_cli("config", "--config", f)
    assert again.exit_code == 0 and tomllib.loads(again.output) == data


def test_precedence_through_the_cli(tmp_path):
    f = tmp_path / "sgsc.toml"
    f.write_text('out = "from-file"\nsteps = 11\ngamma = 0.5\nseed = 4\n')
    result = run_cli("pipeline", "--config", f, "--seed", "9", "--print-config",
                     env={"SGSC_GAMMA": "0.7", "SGSC_SEED": "8"})
    assert result.exit_code == 0, result.output
    data = tomllib.loads(result.output)
    assert (data["out"], data["steps"], data["gamma"], data["seed"]) == ("from-file", 11, 0.7, 9)
    assert "[from env SGSC_GAMMA]" in result.output and "[from command line]" in result.output
    # the config file itself can come from the environment
    env_file = run_cli("pipeline", "--print-config", env={"SGSC_CONFIG": str(f)})
    assert tomllib.loads(env_file.output)["steps"] == 11


@pytest.mark.parametrize("args, env, message", [
    (["pipeline", "--steps", "abc", "--out", "x"], {}, "error: --steps='abc': expected an integer"),
    (["pipeline", "--profiles", "portable,tiny", "--out", "x"], {}, "error: profiles="),
    (["pipeline", "--providers", "npu", "--out", "x"], {}, "error: providers="),
    (["pipeline", "--print-config"], {"SGSC_THREADS": "0"}, "error: threads=0 is out of range"),
    (["pipeline", "--config", "/nonexistent.toml"], {},
     "error: config file /nonexistent.toml does not exist"),
    (["pipeline", "--steps", "5"], {}, "error: no run directory: give --out DIR"),
    (["pipeline", "--dataset", "nope", "--out", "{tmp}/o"], {}, "error: "),
    (["pipeline", "--out", "{tmp}/o", "--resume"], {}, "error: --resume: no checkpoint at"),
    (["pipeline", "--out", "{tmp}/file"], {}, "exists and is not a directory"),
    (["config"], {}, "error: nothing to show"),
])
def test_errors_are_one_line_and_exit_2(tmp_path, args, env, message):
    (tmp_path / "file").write_text("")
    result = run_cli(*[a.format(tmp=tmp_path) for a in args], env=env)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[-1].startswith("error: ") and message in lines[-1], result.output
    assert len([line for line in lines if line.startswith("error")]) == 1
    assert not (tmp_path / "o" / "manifest.json").exists()


def test_config_and_help_stay_lean():
    import subprocess
    import sys

    code = ("import sys; from click.testing import CliRunner; from sgsc_export.cli import main; "
            "r = CliRunner().invoke(main, ['config', '--print-defaults']); assert r.exit_code == 0, "
            "r.output; "
            "r = CliRunner().invoke(main, ['pipeline', '--help']); assert r.exit_code == 0, r.output; "
            "print(sorted({'torch', 'onnx', 'onnxruntime', 'matplotlib'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
