"""Read-only facts about an ONNX model: metadata, inputs/outputs and its quantised layers.

A *quantised layer* is a Conv, Gemm or MatMul node whose weight input (input 1) is the output of a
DequantizeLinear node (its integer data an initializer, or computed in the graph as the ``compact`` profile
unpacks it). These are the layers the fusion report and the per-layer
parity talk about; everything else is plain float.

The file is untrusted: :func:`load_model` reads it with ``sgsc_export._onnx_safety.load_onnx_bounded``
(external data beside the model only; declared sizes against ``SGSC_MAX_INPUT_BYTES`` /
``SGSC_MAX_ONNX_ELEMENTS``) and refuses a graph whose statically inferred intermediates exceed the element
limit before onnxruntime sees it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from sgsc_export._onnx_safety import check_static_sizes, load_onnx_bounded
from sgsc_export.errors import ValidationError

__all__ = ["COMPUTE_OPS", "ModelInfo", "QuantLayer", "load_model"]

COMPUTE_OPS = ("Conv", "Gemm", "MatMul")
_BITS = {onnx.TensorProto.INT8: 8, onnx.TensorProto.UINT8: 8, onnx.TensorProto.INT4: 4,
         onnx.TensorProto.UINT4: 4, onnx.TensorProto.INT2: 2, onnx.TensorProto.UINT2: 2}
_QUANT_ACTIVATION = ("QuantizeLinear",)


@dataclass(frozen=True)
class QuantLayer:
    """One quantised compute node and the DequantizeLinear that feeds its weight."""

    name: str              # the compute node's name (its output name if unnamed)
    op_type: str           # Conv / Gemm / MatMul
    output: str            # the compute node's output tensor
    weight: str            # the integer initializer (DequantizeLinear input 0)
    scale: str             # the scale initializer (DequantizeLinear input 1)
    dq_output: str         # the float weight tensor the compute node reads
    dq_axis: int           # DequantizeLinear's axis attribute (default 1)
    bits: int              # container width of the weight: 2, 4 or 8
    trans_b: bool = False  # Gemm's transB


@dataclass
class ModelInfo:
    """A loaded model and what the checks need to know about it."""

    path: Path
    model: onnx.ModelProto
    metadata: dict[str, str]
    opset: int
    input_name: str
    output_name: str
    layers: list[QuantLayer] = field(default_factory=list)
    has_activation_qdq: bool = False

    @property
    def task(self) -> str:
        return self.metadata.get("sgsc.task") or "classification"

    @property
    def preservation_sha256(self) -> str | None:
        return self.metadata.get("sgsc.preservation_sha256") or None

    @property
    def weight_bits(self) -> list[int]:
        return sorted({layer.bits for layer in self.layers})

    def initializer(self, name: str) -> np.ndarray:
        for init in self.model.graph.initializer:
            if init.name == name:
                return numpy_helper.to_array(init)
        raise KeyError(name)


def _attr(node: onnx.NodeProto, name: str, default: int) -> int:
    for attr in node.attribute:
        if attr.name == name:
            return int(onnx.helper.get_attribute_value(attr))
    return default


def find_quant_layers(model: onnx.ModelProto) -> list[QuantLayer]:
    """The Conv/Gemm/MatMul nodes of the main graph whose weight comes from a DequantizeLinear."""
    graph = model.graph
    inits = {init.name: init for init in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    layers = []
    for node in graph.node:
        if node.op_type not in COMPUTE_OPS or len(node.input) < 2:
            continue
        dq = producers.get(node.input[1])
        if dq is None or dq.op_type != "DequantizeLinear":
            continue
        data = inits.get(dq.input[0])
        layers.append(QuantLayer(
            name=node.name or node.output[0], op_type=node.op_type, output=node.output[0],
            weight=dq.input[0], scale=dq.input[1], dq_output=dq.output[0], dq_axis=_attr(dq, "axis", 1),
            bits=_BITS.get(data.data_type, 8) if data is not None else 8,
            trans_b=bool(_attr(node, "transB", 0))))
    return layers


def load_model(path: str | Path) -> ModelInfo:
    """Load and check an ONNX file; raise :class:`ValidationError` if it is not a usable model."""
    path = Path(path)
    if not path.is_file():
        raise ValidationError(f"{path}: no such model file")
    # Untrusted file: external data beside the model only, declared sizes checked before anything is read.
    model = load_onnx_bounded(path, ValidationError)
    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # onnx raises several unrelated types for a bad file
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValidationError(f"{path}: not a valid ONNX model: {text}") from None
    # What onnxruntime would fold or allocate from declared shapes, bounded before a session is made.
    check_static_sizes(model, str(path), ValidationError)
    graph = model.graph
    init_names = {init.name for init in graph.initializer}
    inputs = [vi.name for vi in graph.input if vi.name not in init_names]
    if len(inputs) != 1 or len(graph.output) < 1:
        raise ValidationError(f"{path}: expected one data input and at least one output, found "
                              f"inputs {inputs}")
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    return ModelInfo(
        path=path, model=model, metadata={p.key: p.value for p in model.metadata_props}, opset=opset,
        input_name=inputs[0], output_name=graph.output[0].name, layers=find_quant_layers(model),
        has_activation_qdq=any(n.op_type in _QUANT_ACTIVATION for n in graph.node))
