"""Provider selection (no GPU needed), optimisation levels, and the workarounds for known onnxruntime
traps."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as T

from runtime_checks.graph import load_model
from runtime_checks.sessions import (
    ProviderPlan,
    ProviderUnavailable,
    make_session,
    parse_opt_levels,
    plan_session,
    resolve_providers,
    run_batched,
)
from sgsc_export.errors import ValidationError
from tests.runtime_checks.conftest import make_model, run_onnx

CPU_ONLY = ["CPUExecutionProvider"]
GPU_BUILD = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


def test_cpu_only_build_skips_gpu_providers_with_reason():
    plans, skipped = resolve_providers(["cpu", "cuda", "tensorrt"], CPU_ONLY)
    assert [p.name for p in plans] == ["cpu"]
    assert set(skipped) == {"cuda", "tensorrt"}
    assert "onnxruntime-gpu" in skipped["cuda"]


def test_require_providers_turns_a_missing_provider_into_an_error():
    with pytest.raises(ValidationError, match="'cuda' required but unavailable"):
        resolve_providers(["cpu", "cuda"], CPU_ONLY, require=True)


def test_gpu_build_plans_explicit_options_and_fallbacks():
    plans, skipped = resolve_providers(["CUDAExecutionProvider", "tensorrt", "cuda"], GPU_BUILD)
    assert not skipped and [p.name for p in plans] == ["cuda", "tensorrt"]
    cuda, trt = plans
    assert cuda.providers[0][0] == "CUDAExecutionProvider" and cuda.providers[0][1]["use_tf32"] == "0"
    assert [p if isinstance(p, str) else p[0] for p in trt.providers] == GPU_BUILD
    assert trt.providers[0][1]["trt_fp16_enable"] == "False" and trt.is_gpu
    assert not ProviderPlan("cpu", "x").is_gpu


@pytest.mark.parametrize("requested, message",
                         [(["npu"], "unknown provider"), (["cuda"], "no requested provider")])
def test_unusable_requests_are_errors(requested, message):
    with pytest.raises(ValidationError, match=message):
        resolve_providers(requested, CPU_ONLY)


def test_opt_levels_are_validated_and_deduplicated():
    assert parse_opt_levels(["all", "disabled", "all"]) == ["all", "disabled"]
    with pytest.raises(ValidationError, match="unknown optimisation level"):
        parse_opt_levels(["max"])


def test_session_that_silently_falls_back_is_provider_unavailable(tmp_path):
    onnx.save(make_model(), tmp_path / "m.onnx")
    info = load_model(tmp_path / "m.onnx")
    fake = ProviderPlan("cuda", "CUDAExecutionProvider", ("CPUExecutionProvider",))
    with pytest.raises(ProviderUnavailable, match="instead of CUDAExecutionProvider"):
        make_session(info, fake, "disabled", plan_session(info), 1)


@pytest.mark.parametrize("weight_type, opset, act_qdq", [(T.INT8, 21, False), (T.INT4, 21, False),
                                                         (T.INT2, 25, False), (T.INT2, 25, True)])
def test_safe_options_keep_every_level_exact(tmp_path, weight_type, opset, act_qdq):
    model = make_model(weight_type, opset, act_qdq=act_qdq)
    onnx.save(model, tmp_path / "m.onnx")
    info = load_model(tmp_path / "m.onnx")
    plan = plan_session(info)
    assert "matmulnbits_accuracy_level_0" in plan.workarounds
    assert ("disable_QDQSelectorActionTransformer" in plan.workarounds) == (weight_type == T.INT2)
    x = np.random.default_rng(3).normal(size=(32, 1, 8, 8)).astype(np.float32)
    expected = run_onnx(model, x)
    cpu = resolve_providers(["cpu"], CPU_ONLY)[0][0]
    for level in ("basic", "extended", "all"):
        got = run_batched(make_session(info, cpu, level, plan, 1), x, batch_size=16)[0]
        np.testing.assert_array_equal(got, expected)


def test_without_the_workaround_onnxruntime_is_inexact(tmp_path):
    """Guards the reason for ``matmulnbits_accuracy_level_0``: if onnxruntime fixes it, this test says so."""
    onnx.save(make_model(), tmp_path / "m.onnx")
    info = load_model(tmp_path / "m.onnx")
    x = np.random.default_rng(3).normal(size=(32, 1, 8, 8)).astype(np.float32)
    cpu = resolve_providers(["cpu"], CPU_ONLY)[0][0]
    unsafe = run_batched(make_session(info, cpu, "all", plan_session(info, safe=False), 1), x)[0]
    assert np.abs(unsafe - run_onnx(make_model(), x)).max() > 1e-3


def test_cpu_provider_is_always_available():
    assert "CPUExecutionProvider" in ort.get_available_providers()
