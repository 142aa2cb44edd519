"""A toy-size `sgsc pipeline` run on digits through the real CLI, made once per test session.

Torch runs on one thread here: the models are tiny, and on a shared 2-core machine two intra-op threads spend
most of their time waiting for each other (measured: 5x the CPU time of one thread for the toy run).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

torch.set_num_threads(1)

TOY_ARGS = ["--dataset", "digits", "--steps", "30", "--finetune-steps", "0", "--float-epochs", "1",
            "--checkpoint-every", "10", "--no-latency", "--quiet",
            "--max-drop", "100"]  # a toy run is not meant to meet the default accuracy target (exit 1)


def run_cli(*args: str, env: dict | None = None):
    from sgsc_export.cli import main

    env = {k: None for k in __import__("os").environ if k.startswith("SGSC_")} | (env or {})
    return CliRunner().invoke(main, [str(a) for a in args], env=env)


@pytest.fixture(scope="session")
def toy_run(tmp_path_factory) -> tuple[Path, object]:
    """(run directory, click result) of a toy pipeline run with both default profiles."""
    out = tmp_path_factory.mktemp("pipeline") / "run"
    result = run_cli("pipeline", *TOY_ARGS, "--out", out)
    assert result.exit_code in (0, 1), result.output
    return out, result
