"""The kernels an ort-int8 file records (``sgsc.fused``, from ``converters.passes.kernels``, no engine)
against what onnxruntime runs (``runtime_checks.fusion``, the measurement ``sgsc validate`` reports), on real
exports.

They must agree layer by layer at the levels where onnxruntime's QDQ fusions run (``extended``, ``all``). One
layer kind cannot be compared, and the test says so rather than skipping: an embedding (``Gather`` of a
dequantised table) is not a Conv/Gemm/MatMul, so ``runtime_checks`` does not follow it; the static pass
records it as ``float``, and it is checked here to be a layer the fusion report does not list.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from converters.passes.metadata import layer_records
from runtime_checks.fusion import fusion_report
from runtime_checks.graph import load_model
from runtime_checks.sessions import plan_session, resolve_providers


def _compare(path, level: str) -> dict[str, tuple[str, str]]:
    """layer → (recorded kernel, measured kernel); a layer runtime_checks does not follow is measured
    ``None``."""
    model = onnx.load(path, load_external_data=False)
    meta = {p.key: p.value for p in model.metadata_props}
    recorded = json.loads(meta["sgsc.fused"])
    weight_of = {r["name"]: r["weight"] for r in layer_records(meta["sgsc.layers"])}
    info = load_model(path)
    cpu = resolve_providers(["cpu"])[0][0]
    shape = [1 if not isinstance(d, int) or d <= 0 else d for d in
             [dim.dim_value or -1 for dim in model.graph.input[0].type.tensor_type.shape.dim]]
    dtype = (
        np.int64 if model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.INT64 else np.float32
    )
    report = fusion_report(info, cpu, level, plan_session(info), 1, np.zeros(shape, dtype=dtype))
    by_weight = {q.dq_output: f for q, f in zip(info.layers, report.layers)}
    out = {}
    for name, kernel in recorded.items():
        fusion = by_weight.get(weight_of[name])
        out[name] = (kernel, None if fusion is None else (fusion.kernel if fusion.integer else "float"))
    return out


def _assert_agree(pairs: dict[str, tuple[str, str]]) -> None:
    for name, (recorded, measured) in pairs.items():
        if measured is None:  # an embedding: not a compute node runtime_checks follows (see the docstring)
            assert recorded == "float", (name, recorded)
            continue
        assert recorded == measured, f"layer {name}: recorded {recorded}, onnxruntime runs {measured}"


@pytest.mark.parametrize("level", ["extended", "all"])
def test_digits_cnn(ort_int8_every, level):
    pairs = _compare(ort_int8_every.path, level)
    assert {r for r, _ in pairs.values()} <= {"QLinearConv", "QGemm"}
    assert all(m is not None for _, m in pairs.values())  # every digits layer is a Conv or Gemm
    _assert_agree(pairs)


def test_char_transformer(lm_artifact, tmp_path):
    """Every activation quantised (the layout the kernel rules are about; at the gate's defaults this toy
    model keeps its activations float, see tests/converters/test_lm_export.py)."""
    from converters import export
    from tests.converters.passes.toy import EVERY_ACTIVATION

    result = export(lm_artifact, tmp_path / "lm.onnx", "ort-int8", qdq_targets=EVERY_ACTIVATION)
    for level in ("extended", "all"):
        pairs = _compare(result.path, level)
        assert any(m is None for _, m in pairs.values())  # the token and position embeddings
        assert sum(r == "QLinearMatMul" for r, _ in pairs.values()) > 10
        _assert_agree(pairs)
