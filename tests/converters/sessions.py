"""onnxruntime sessions for the converters' tests, with the safe options ``sgsc validate`` uses
(``runtime_checks.sessions``) against onnxruntime's known traps."""

from __future__ import annotations

import onnx
import onnxruntime as ort


def safe_session(path, level=ort.GraphOptimizationLevel.ORT_DISABLE_ALL, optimized=None):
    """A session with the safe options: exact MatMulNBits, and no QDQ selector rewrites of INT2 weights (which
    onnxruntime turns into an inexact 2-bit MatMulNBits whatever the accuracy level)."""
    int2 = any(t.data_type == onnx.TensorProto.INT2 for t in onnx.load(str(path)).graph.initializer)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = level
    opts.add_session_config_entry("session.qdq_matmulnbits_accuracy_level", "0")
    if optimized:
        opts.optimized_model_filepath = str(optimized)
    disabled = ["QDQSelectorActionTransformer"] if int2 else None
    return ort.InferenceSession(
        str(path), opts, providers=["CPUExecutionProvider"], disabled_optimizers=disabled
    )
