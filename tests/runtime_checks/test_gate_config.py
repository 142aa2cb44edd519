"""The one verdict rule, and ValidateConfig: ranges and names checked in one place, JSON, today's kwargs."""

from __future__ import annotations

import json

import pytest

from runtime_checks.config import ValidateConfig
from runtime_checks.gate import Thresholds, exit_code, verdict
from sgsc_export.errors import ConfigError


@pytest.mark.parametrize("statuses, expected", [
    (["passed", "passed"], "passed"), (["passed", "skipped"], "passed"), (["passed", "failed"], "failed"),
    (["failed", "error"], "error"), (["skipped"], "error"), ([], "error"),
])
def test_verdict(statuses, expected):
    assert verdict(statuses) == expected
    assert exit_code(expected) == {"passed": 0, "failed": 1, "error": 2}[expected]


def test_defaults_are_the_cli_defaults_and_round_trip_through_json():
    config = ValidateConfig()
    assert (config.providers, config.opt_levels, config.batch_sizes, config.threads) == (
        ("cpu",), ("disabled", "all"), (1, 64), 1)
    assert config.thresholds == Thresholds()
    data = json.loads(config.to_json())
    assert data["version"] == 1 and data["providers"] == ["cpu"]
    assert ValidateConfig.from_dict(data) == config


@pytest.mark.parametrize("changes, message", [
    ({"min_agreement": 1.5}, "min_agreement=1.5 is out of range; allowed [0.0, 1.0]"),
    ({"max_accuracy_drop": -1}, "max_accuracy_drop=-1.0 is out of range"),
    ({"max_logit_diff": float("inf")}, "max_logit_diff=inf is out of range"),
    ({"threads": 0}, "threads=0 is out of range; allowed [1, 1024]"),
    ({"batch_sizes": (1, 0)}, "batch_sizes=0 is out of range"),
    ({"providers": ("npu",)}, "providers=['npu']: unknown provider 'npu'"),
    ({"opt_levels": ("max",)}, "opt_levels=['max']: unknown optimisation level 'max'"),
    ({"providers": ()}, "providers=() must be a non-empty list"),
    ({"layers": "yes"}, "layers='yes' must be true or false"),
    ({"version": 2}, "version=2 is not supported"),
])
def test_bad_values_name_the_field_and_range(changes, message):
    with pytest.raises(ConfigError) as info:
        ValidateConfig(**changes)
    assert message in str(info.value)


def test_provider_names_as_onnxruntime_spells_them():
    names = ("CPUExecutionProvider", "CUDA")
    assert ValidateConfig(providers=names).providers == names


def test_from_kwargs_takes_validates_keyword_arguments():
    config = ValidateConfig.from_kwargs(thresholds=Thresholds(min_agreement=0.5), latency=False, threads=2)
    assert config.min_agreement == 0.5 and config.latency is False and config.threads == 2
    assert config.thresholds == Thresholds(min_agreement=0.5)
    with pytest.raises(TypeError, match="no_such_setting"):
        ValidateConfig.from_kwargs(no_such_setting=1)


def test_the_pipeline_reuses_the_help_and_bounds():
    import dataclasses

    from sgsc_export.cli.pipeline.config import PipelineConfig

    fields = {f.name: f for f in dataclasses.fields(PipelineConfig)}
    for name in ("min_agreement", "threads", "providers"):
        source = {f.name: f for f in dataclasses.fields(ValidateConfig)}[name]
        assert fields[name].metadata["help"] == source.metadata["help"]
        assert fields[name].metadata.get("range") == source.metadata.get("range")
    assert PipelineConfig().validate_config() == ValidateConfig()
