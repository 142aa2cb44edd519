"""Fusion report: integer kernels vs dequantise-to-float; GPU placement (fallback and Memcpy nodes)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from runtime_checks import EvalData, validate
from runtime_checks.fusion import fusion_report, parse_profile
from runtime_checks.graph import load_model
from runtime_checks.sessions import ProviderPlan, make_session, plan_session, resolve_providers
from tests.runtime_checks.conftest import make_model

X = np.random.default_rng(0).normal(size=(4, 1, 8, 8)).astype(np.float32)
AVAILABLE = ort.get_available_providers()


@pytest.fixture
def info(tmp_path):
    onnx.save(make_model(), tmp_path / "m.onnx")
    return load_model(tmp_path / "m.onnx")


def test_int8_layers_after_full_optimisation(info):
    cpu = resolve_providers(["cpu"])[0][0]
    result = fusion_report(info, cpu, "all", plan_session(info), 1, X)
    kinds = {f.layer: (f.kind, f.kernel) for f in result.layers}
    assert kinds == {"conv": ("dequantize", "FusedConv"), "fc": ("integer", "MatMulNBits")}
    unoptimised = fusion_report(info, cpu, "disabled", plan_session(info), 1, X)
    assert all(not f.integer for f in unoptimised.layers)


def test_parse_profile_of_a_real_cpu_session(info, tmp_path):
    cpu = resolve_providers(["cpu"])[0][0]
    session = make_session(info, cpu, "disabled", plan_session(info), 1, profile_prefix=str(tmp_path / "p"))
    session.run(None, {"x": X})
    events = json.loads(Path(session.end_profiling()).read_text())
    fallback, memcpy = parse_profile(events, "CUDAExecutionProvider")
    assert any(name.startswith("conv ") for name in fallback) and memcpy == []
    assert parse_profile(events, "CPUExecutionProvider") == ([], [])


def test_parse_profile_finds_fallback_and_memcpy_nodes():
    events = [{"cat": "Node", "name": "conv_kernel_time",
               "args": {"op_name": "Conv", "provider": "CUDAExecutionProvider"}},
              {"cat": "Node", "name": "fc_kernel_time",
               "args": {"op_name": "MatMulNBits", "provider": "CPUExecutionProvider"}},
              {"cat": "Node", "name": "Memcpy_token_1_kernel_time",
               "args": {"op_name": "MemcpyToHost", "provider": "CUDAExecutionProvider"}},
              {"cat": "Session", "name": "model_run", "args": {}}]
    assert parse_profile(events, "CUDAExecutionProvider") == (["fc (MatMulNBits)"], ["Memcpy_token_1"])


@pytest.mark.parametrize("provider", ["cuda", "tensorrt"])
def test_gpu_provider_end_to_end(provider, run_dir):
    ep = {"cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}[provider]
    if ep not in AVAILABLE:
        pytest.skip(f"{ep} not available: needs onnxruntime-gpu "
                    "(installed in place of onnxruntime) and a GPU")
    run, model = run_dir
    report = validate(model, EvalData.from_run_dir(run), providers=("cpu", provider), latency=False)
    if provider in report.skipped_providers:
        pytest.skip(f"{ep} listed but did not load: {report.skipped_providers[provider]}")
    d = report.to_dict()
    assert d["providers"][provider]["assigned_providers"][0] == ep
    assert {"fallback_nodes", "memcpy_nodes"} <= set(d["fusion"][provider]["all"])
    assert report.status in ("passed", "failed")


def test_gpu_plan_on_a_cpu_build_is_rejected_not_faked(info):
    fake = ProviderPlan("cuda", "CUDAExecutionProvider", ("CPUExecutionProvider",))
    with pytest.raises(Exception, match="instead of CUDAExecutionProvider"):
        make_session(info, fake, "all", plan_session(info), 1)
