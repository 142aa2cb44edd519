"""Fusion report: after onnxruntime's optimisations, which quantised layers run as integer kernels.

The optimised graph is dumped (``optimized_model_filepath``, a temp file) and each quantised layer is followed
by its integer weight initializer: consumed by an integer kernel (QLinearConv, QLinearMatMul,
MatMulIntegerToFloat, MatMulNBits, ...) → ``integer``; still consumed by a DequantizeLinear → ``dequantize``
(the weight is dequantised to float on every run). onnxruntime never constant-folds DequantizeLinear, so
``folded`` should not occur; it is reported if it does.

On GPU providers a one-batch profiling run tells where each node ran (``args.provider`` of the profile's node
events): nodes on CPUExecutionProvider fell back to CPU, and Memcpy* nodes copy between devices.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx

from runtime_checks.graph import ModelInfo, QuantLayer
from runtime_checks.sessions import ProviderPlan, SessionPlan, make_session
from sgsc_export.errors import ValidationError

__all__ = ["INTEGER_OPS", "FusionResult", "LayerFusion", "classify_layers", "fusion_report", "parse_profile"]

INTEGER_OPS = ("QLinearConv", "QLinearMatMul", "MatMulIntegerToFloat", "MatMulNBits", "ConvInteger",
               "MatMulInteger", "DynamicQuantizeMatMul", "QGemm", "QAttention")


@dataclass
class LayerFusion:
    """How one quantised layer runs after optimisation: ``kind`` is integer / dequantize / folded / opaque."""

    layer: str
    op_type: str
    kind: str
    kernel: str

    @property
    def integer(self) -> bool:
        return self.kind == "integer"


@dataclass
class FusionResult:
    provider: str
    opt_level: str
    layers: list[LayerFusion] = field(default_factory=list)
    fallback_nodes: list[str] = field(default_factory=list)
    memcpy_nodes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"integer_layers": [f.layer for f in self.layers if f.integer],
                "float_layers": [f.layer for f in self.layers if not f.integer],
                "layers": [asdict(f) | {"integer": f.integer} for f in self.layers],
                "fallback_nodes": self.fallback_nodes, "memcpy_nodes": self.memcpy_nodes, "notes": self.notes}


def classify_layers(layers: list[QuantLayer], optimized: onnx.ModelProto) -> list[LayerFusion]:
    """Follow each layer's integer weight into the optimised graph (derived initializers keep its name as a
    prefix, e.g. MatMulNBits' ``W_T``)."""
    nodes = list(optimized.graph.node)
    consumers_of: dict[str, list[onnx.NodeProto]] = {}
    for node in nodes:
        for name in node.input:
            consumers_of.setdefault(name, []).append(node)
    names = set(consumers_of)
    out = []
    for layer in layers:
        users = [n for name in names if name == layer.weight or name.startswith(layer.weight + "_")
                 for n in consumers_of[name]]
        integer = [n for n in users if n.op_type in INTEGER_OPS]
        dq = [n for n in users if n.op_type == "DequantizeLinear"]
        if integer:
            out.append(LayerFusion(layer.name, layer.op_type, "integer", integer[0].op_type))
        elif dq:
            after = [c.op_type for d in dq for c in consumers_of.get(d.output[0], [])]
            out.append(LayerFusion(layer.name, layer.op_type, "dequantize", after[0] if after else "?"))
        elif users:
            out.append(LayerFusion(layer.name, layer.op_type, "opaque", users[0].op_type))
        else:
            out.append(LayerFusion(layer.name, layer.op_type, "folded", "float weight (constant)"))
    return out


def parse_profile(events: list[dict], gpu_ep: str) -> tuple[list[str], list[str]]:
    """``(fallback_nodes, memcpy_nodes)`` from onnxruntime profile events of a session on ``gpu_ep``."""
    fallback, memcpy = [], []
    for event in events:
        if event.get("cat") != "Node":
            continue
        args = event.get("args") or {}
        op, provider = args.get("op_name", ""), args.get("provider", "")
        name = event.get("name", "").removesuffix("_kernel_time")
        if not provider or name.endswith(("_fence_before", "_fence_after")):
            continue
        if op.startswith("Memcpy"):
            memcpy.append(name)
        elif provider != gpu_ep and provider == "CPUExecutionProvider":
            fallback.append(f"{name} ({op})")
    return sorted(set(fallback)), sorted(set(memcpy))


def fusion_report(info: ModelInfo, provider: ProviderPlan, level: str, plan: SessionPlan, threads: int,
                  x_sample: np.ndarray) -> FusionResult:
    """Optimise the model on ``provider`` at ``level`` and report per-layer kernels (and GPU placement)."""
    result = FusionResult(provider.name, level)
    with tempfile.TemporaryDirectory(prefix="sgsc-fusion-") as tmp:
        opt_path = str(Path(tmp) / "optimized.onnx")
        try:
            make_session(info, provider, level, plan, threads, optimized_path=opt_path)
            result.layers = classify_layers(info.layers, onnx.load(opt_path, load_external_data=False))
        except ValidationError as exc:
            if not provider.is_gpu:
                raise
            # TensorRT's compiled nodes cannot be serialised; placement below still tells the story.
            result.notes.append(f"optimised graph not available: {exc}")
        if provider.is_gpu:
            session = make_session(info, provider, level, plan, threads,
                                   profile_prefix=str(Path(tmp) / "prof"))
            session.run(None, {info.input_name: x_sample})
            events = json.loads(Path(session.end_profiling()).read_text())
            result.fallback_nodes, result.memcpy_nodes = parse_profile(events, provider.ep)
    return result
