"""What the passes share: the graph being rewritten, the artifact's facts about each quantised layer, and a
small
helper that adds constants and nodes with deterministic names."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir

__all__ = ["ExportContext", "GraphEditor", "LayerWeight"]


@dataclass
class LayerWeight:
    """One quantised layer: its weight initializer in the float graph and its integers in that layout.

    ``axis`` is the output-channel axis of ``ints`` (0 for Conv and Gemm with transB, 1 for a MatMul weight
    ``[in, out]``); ``bits`` and ``scale`` are per output channel.
    """

    name: str
    kind: str
    value: ir.Value
    ints: np.ndarray
    scale: np.ndarray
    bits: np.ndarray
    axis: int = 0
    container: str = ""
    stored_bytes: int = 0
    fused: str = ""
    activation: str = ""  # ort-int8: "int8" when the layer's input is quantised, else "float"

    @property
    def fp32_bytes(self) -> int:
        return int(self.ints.size) * 4

    def record(self) -> dict[str, Any]:
        """The per-layer entry of the ``sgsc.layers`` metadata (shape and axis are in the graph already)."""
        hist = np.bincount(self.bits.astype(np.int64), minlength=9)
        record = {
            "name": self.name,
            "weight": self.value.name,
            "bits_histogram": {str(b): int(n) for b, n in enumerate(hist) if n},
            "learned_bits": int(self.bits.astype(np.int64).sum())
            * (int(self.ints.size) // max(1, len(self.bits))),
            "fp32_bytes": self.fp32_bytes,
            "stored_bytes": int(self.stored_bytes),
            "container": self.container,
        }
        if self.activation:
            record["activation"] = self.activation
        return record


@dataclass
class ExportContext:
    """The state one export threads through its passes."""

    model: ir.Model
    profile: str
    opset: int
    manifest: dict[str, Any]
    manifest_sha256: str
    version: str
    layers: list[LayerWeight] = field(default_factory=list)
    float_onnx_bytes: int = 0
    quant: dict[str, np.ndarray] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)
    calibration: np.ndarray | None = None
    selection: Any = None  # list of converters.passes.qdq_select.SelectionData: where ort-int8 chooses
    qdq_targets: Any = None  # converters.passes.qdq_select.QDQTargets; None: the gate's defaults
    activation_qdq: dict[str, Any] = field(default_factory=dict)  # the choice made, for the metadata
    notes: list[str] = field(default_factory=list)
    fused: dict[str, str] = field(default_factory=dict)


class GraphEditor:
    """Adds initializers and nodes to ``graph``; value names are ``prefix`` + a counter, short because
    every name
    is stored twice in the file and the ``compact`` profile's budget for graph bytes is small. Nodes are
    unnamed."""

    def __init__(self, graph: ir.Graph, prefix: str) -> None:
        self.graph = graph
        self.prefix = prefix
        self._count = 0
        self._taken = set(graph.initializers) | {v.name for n in graph for v in n.outputs}

    def _name(self, stem: str) -> str:
        name = f"{self.prefix}{stem}"
        while name in self._taken:
            self._count += 1
            name = f"{self.prefix}{stem}{self._count}"
        self._taken.add(name)
        return name

    def constant(self, array: np.ndarray | onnx.TensorProto, stem: str, *, shared: bool = False) -> ir.Value:
        """An initializer; ``shared=True`` reuses one of the same name (small constants common to layers)."""
        if shared and stem in self.graph.initializers:
            return self.graph.initializers[stem]
        name = stem if shared else self._name(stem)
        self._taken.add(name)
        if isinstance(array, onnx.TensorProto):
            array.name = name
            tensor = ir.serde.deserialize_tensor(array)
        else:
            tensor = ir.tensor(np.array(array, order="C", copy=True), name=name)
        value = ir.Value(
            name=name, shape=ir.Shape(tensor.shape), type=ir.TensorType(tensor.dtype), const_value=tensor
        )
        self.graph.register_initializer(value)
        return value

    def op(
        self, op_type: str, inputs: list[ir.Value | None], before: ir.Node, stem: str = "", **attributes: Any
    ) -> ir.Value:
        """Insert ``op_type(inputs)`` before ``before``; return its single output."""
        return self.node(op_type, inputs, before, 1, stem, **attributes)[0]

    def node(
        self, op_type: str, inputs: list[ir.Value | None], before: ir.Node, outputs: int, stem: str = "",
        **attributes: Any,
    ) -> list[ir.Value]:
        """Insert ``op_type(inputs)`` with ``outputs`` outputs before ``before``; return them."""
        node = ir.Node(
            "", op_type, inputs, attributes=ir.convenience.convert_attributes(attributes), num_outputs=outputs
        )
        for out in node.outputs:
            out.name = self._name(stem or "")
        self.graph.insert_before(before, node)
        node.name = None  # the graph's name authority assigns one on insertion; unnamed is valid and shorter
        return list(node.outputs)
