"""The one use of onnxruntime in ``converters``: running the ``ort-int8`` graph while it is being built.

The import-linter contract names this module as the only one in ``converters`` allowed to import
onnxruntime, imported in :func:`run_graph`, not at package import. Two jobs need it: calibration (the ranges
of the float activations, ``converters.passes.activations``) and the choice of the layers whose activations
are quantised (``converters.passes.qdq_select``), which measures the candidate file on held data the way
``sgsc validate`` will. Both run with one thread, so the ranges, the choice, and the file are reproducible.
Why onnxruntime and not ``onnx.reference``: the ranges decide the scales and so every byte of an ``ort-int8``
file, and the choice must be measured on the engine the gate will run; another engine computes the same graph
with other float rounding and would move a min/max by an ulp.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import onnx

from sgsc_export.errors import ExportError

__all__ = ["LEVELS", "model_input", "run_graph"]

LEVELS = ("disabled", "all")
_BATCH = 256


def model_input(x: np.ndarray) -> np.ndarray:
    """Inputs as the exported graph takes them: int64 token ids, or float32."""
    x = np.asarray(x)
    return x.astype(np.int64 if np.issubdtype(x.dtype, np.integer) else np.float32)


def run_graph(proto: onnx.ModelProto, x: np.ndarray, names: list[str] | None = None,
              level: str = "disabled") -> Iterator[list[np.ndarray]]:
    """Yield, per batch of ``x``, the values of ``names`` (default: the graph outputs); ``names`` that are
    not graph outputs become outputs of a copy. ``level`` ``"all"`` runs onnxruntime's fusions (integer
    kernels) with the settings ``sgsc validate`` uses against its known traps (MatMulNBits at accuracy level
    0)."""
    try:
        import onnxruntime as ort
    except ImportError as exc:  # pragma: no cover - onnxruntime is a dependency
        raise ExportError("the ort-int8 profile calibrates in onnxruntime, which is not installed; "
                          "pip install onnxruntime") from exc
    model = proto
    have = [o.name for o in proto.graph.output]
    if names is None:
        names = have
    elif any(n not in have for n in names):
        model = onnx.ModelProto()
        model.CopyFrom(proto)
        for name in names:
            if name not in have:
                model.graph.output.append(onnx.ValueInfoProto(name=name))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if level == "all"
                                     else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.qdq_matmulnbits_accuracy_level", "0")
    session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0].name
    for start in range(0, len(x), _BATCH):
        yield session.run(names, {feed: x[start : start + _BATCH]})
