"""Per-layer parity: the outputs of the quantised layers, exposed on a copy of the graph, against a reference.

The error of a layer is measured in units of its quantisation step: ``|y - y_ref|`` of output channel ``c``
divided by the DequantizeLinear scale of that channel (the smallest scale of its blocks when blocked; the
scalar when per-tensor). Two modes:

- ``local`` (weight references): each layer gets a twin node in the same graph, reading the same input
  activation but reference float weights; the difference is that layer's own error, so a broken layer is named
  even when its error grows downstream. The weights come from ``artifact_state`` where a layer matches by
  name, else from the layer's own DequantizeLinear (which then checks onnxruntime's kernels against float
  math).
- ``end_to_end`` (activation references): the exposed outputs against reference activations, which carry
  upstream errors too; look at the first layer over the threshold.

The reference, in order of preference:

- ``activations``: a dict ``{layer name: array}`` of reference outputs on the same samples (e.g. from
  PyTorch);
- ``reference_model``: another ONNX file (e.g. the model as exported before it was broken), its
  Conv/Gemm/MatMul nodes matched to ours by node name, else by position;
- ``weights``: ``{layer name: float weight}`` (e.g. the artifact's ``model.safetensors``): the same graph with
  those layers' DequantizeLinear replaced by the given float weights (transposed when that is what fits);
- otherwise the same graph with every DequantizeLinear replaced by its own float values, run unoptimised: this
  checks onnxruntime's kernels against float math, not the weights themselves.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from runtime_checks.graph import COMPUTE_OPS, ModelInfo, QuantLayer
from runtime_checks.sessions import ProviderPlan, SessionPlan, make_session, run_batched
from sgsc_export.errors import ValidationError

__all__ = [
    "LayerError",
    "LayerParityResult",
    "expose_outputs",
    "layer_parity",
    "match_weights",
    "with_reference_twins",
]

_NO_LAYERS = "no quantised layers (DequantizeLinear → Conv/Gemm/MatMul) in the model"
_CPU = ProviderPlan("cpu", "CPUExecutionProvider", ("CPUExecutionProvider",))


@dataclass
class LayerError:
    layer: str
    op_type: str
    opt_level: str
    max_abs_error: float
    max_error_steps: float
    mean_error_steps: float
    worst_channel: int
    reference: str


@dataclass
class LayerParityResult:
    reference: str
    n_samples: int
    layers: list[LayerError] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    mode: str = "local"

    @property
    def worst(self) -> LayerError | None:
        return max(self.layers, key=lambda e: e.max_error_steps, default=None)

    def to_dict(self) -> dict:
        worst = self.worst
        return {"reference": self.reference, "mode": self.mode, "n_samples": self.n_samples,
                "worst_layer": worst.layer if worst else None,
                "max_error_steps": worst.max_error_steps if worst else None,
                "layers": [asdict(e) for e in self.layers], "notes": self.notes}


def expose_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """A copy of ``model`` with ``names`` added as graph outputs (float, shape left to the runtime)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    present = {o.name for o in copy.graph.output}
    for name in names:
        if name not in present:
            copy.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return copy


def _dequantized(info: ModelInfo, plan: SessionPlan) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Each layer's float weight and scale, as the graph itself computes them (unoptimised): this covers
    weights unpacked in the graph (``compact``) as well as initializers."""
    names = [n for layer in info.layers for n in (layer.dq_output, layer.scale)]
    session = make_session(expose_outputs(info.model, names).SerializeToString(), _CPU, "disabled", plan, 1)
    shape = [d if isinstance(d, int) else 1 for d in session.get_inputs()[0].shape]
    values = session.run(names, {info.input_name: np.zeros(shape, np.float32)})
    weights = {layer.name: values[2 * i] for i, layer in enumerate(info.layers)}
    return weights, {layer.name: values[2 * i + 1] for i, layer in enumerate(info.layers)}


def with_reference_twins(info: ModelInfo, weights: Mapping[str, np.ndarray]) -> onnx.ModelProto:
    """A copy where each layer in ``weights`` gets a twin node: same op, same input activation, the reference
    float weight, output ``<output>__reference``; both outputs are exposed. Comparing the two isolates the
    layer's own error (nothing propagates from upstream layers)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(info.model)
    by_output = {layer.output: layer for layer in info.layers}
    twins, outputs = [], []
    for node in copy.graph.node:
        layer = by_output.get(node.output[0])
        if layer is None or layer.name not in weights:
            continue
        name = f"{layer.dq_output}__reference"
        copy.graph.initializer.append(numpy_helper.from_array(np.asarray(weights[layer.name], np.float32),
                                                              name))
        twin = onnx.NodeProto()
        twin.CopyFrom(node)
        twin.name, twin.input[1] = f"{node.name or layer.output}__reference", name  # names may be empty
        twin.output[0] = f"{layer.output}__reference"
        del twin.output[1:]
        twins.append(twin)
        outputs += [layer.output, twin.output[0]]
    copy.graph.node.extend(twins)
    return expose_outputs(copy, outputs)


def match_weights(info: ModelInfo, state: Mapping[str, np.ndarray], layer_names: list[str],
                  shapes: Mapping[str, tuple]) -> tuple[dict[str, np.ndarray], list[str]]:
    """Map artifact layers (``L`` with ``state[L + '.weight']``, or ``state[L]`` for one tensor of a module:
    ``attn.in_proj_weight``) to our quantised layers by name.

    First by the converters' naming (the DequantizeLinear's integer data or scale is named ``L.<something>``),
    else by ``L`` occurring in the node name bounded by ``. / :`` or the ends; the longest such ``L`` wins.
    Its weight must have the layer's shape (or its transpose, for MatMul/Gemm).
    """
    out, notes = {}, []
    keys = {name: f"{name}.weight" if f"{name}.weight" in state else name for name in layer_names}
    for layer in info.layers:
        candidates = [name for name in layer_names if keys[name] in state]
        found = [name for name in candidates if layer.weight.startswith(f"{name}.") or
                 layer.scale.startswith(f"{name}.")]
        if not found:
            text = layer.name.strip("/").replace("/", ".")
            found = [name for name in candidates if re.search(rf"(^|[.:]){re.escape(name)}($|[.:])", text)]
        if not found:
            notes.append(f"{layer.name}: no artifact layer matched; reference is its own dequantized weight")
            continue
        name = max(found, key=len)
        weight, shape = np.asarray(state[keys[name]], np.float32), tuple(shapes[layer.name])
        if weight.shape != shape and weight.ndim == 2 and weight.T.shape == shape:
            weight = weight.T
        if weight.shape != shape:
            notes.append(f"{layer.name}: artifact weight {keys[name]} has shape {weight.shape}, layer "
                         f"has {shape}; reference is its own dequantized weight")
            continue
        out[layer.name] = weight
    return out, notes


def _channel_steps(scale: np.ndarray, channels: int) -> np.ndarray:
    scale = np.abs(np.asarray(scale, np.float64))
    if scale.size == 1:
        return np.full(channels, float(scale.reshape(-1)[0]))
    for axis, length in enumerate(scale.shape):
        if length == channels:
            return scale.min(axis=tuple(a for a in range(scale.ndim) if a != axis))
    return np.full(channels, float(scale.min()))


def _errors(layer: QuantLayer, scale: np.ndarray, y: np.ndarray, ref: np.ndarray, level: str,
            reference: str) -> LayerError:
    if y.shape != ref.shape:
        raise ValidationError(f"layer {layer.name}: output shape {y.shape} but reference {ref.shape}")
    axis = 1 if layer.op_type == "Conv" else y.ndim - 1
    diff = np.moveaxis(np.abs(y.astype(np.float64) - ref), axis, -1).reshape(-1, y.shape[axis])
    steps = _channel_steps(scale, y.shape[axis])
    in_steps = diff / np.where(steps > 0, steps, 1.0)
    per_channel = in_steps.max(axis=0) if len(in_steps) else np.zeros(y.shape[axis])
    return LayerError(layer.name, layer.op_type, level, float(diff.max(initial=0.0)),
                      float(per_channel.max()),
                      float(in_steps.mean()) if in_steps.size else 0.0, int(per_channel.argmax()), reference)


def _reference_model_outputs(path: str, info: ModelInfo, x: np.ndarray, plan: SessionPlan,
                             notes: list[str]) -> dict[str, np.ndarray]:
    ref = onnx.load(path)
    ours = [n for n in info.model.graph.node if n.op_type in COMPUTE_OPS]
    theirs = [n for n in ref.graph.node if n.op_type in COMPUTE_OPS]
    by_name = {n.name: n for n in theirs if n.name}
    mapping = {}
    for layer in info.layers:
        node = by_name.get(layer.name)
        if node is None and len(ours) == len(theirs):
            node = theirs[[n.output[0] for n in ours].index(layer.output)]
        if node is None:
            notes.append(f"{layer.name}: no node in the reference model matched (by name or position)")
        else:
            mapping[layer.name] = node.output[0]
    session = make_session(expose_outputs(ref, list(mapping.values())).SerializeToString(), _CPU, "disabled",
                           SessionPlan(), 1)
    values = run_batched(session, x, outputs=list(mapping.values()))
    return dict(zip(mapping, values))


def layer_parity(info: ModelInfo, x: np.ndarray, levels: list[str], plan: SessionPlan, threads: int, *,
                 provider: ProviderPlan = _CPU, activations: Mapping[str, np.ndarray] | None = None,
                 reference_model: str | None = None, artifact_state: Mapping[str, np.ndarray] | None = None,
                 artifact_layers: list[str] | None = None,
                 notes: list[str] | None = None) -> LayerParityResult:
    """Per-layer error (in quantisation steps) of ``info`` at each level on ``provider`` against the
    reference.

    ``artifact_state`` is a state dict (``L.weight`` float arrays) and ``artifact_layers`` its layer names;
    see :func:`match_weights`.
    """
    notes = list(notes or [])
    if not info.layers:
        return LayerParityResult("none", len(x), [], [*notes, _NO_LAYERS])
    if activations is not None:
        kind, refs = "activations", {k: np.asarray(v) for k, v in activations.items()}
    elif reference_model is not None:
        kind, refs = f"onnx:{reference_model}", _reference_model_outputs(reference_model, info, x, plan,
                                                                         notes)
    else:
        return _local_parity(info, x, levels, plan, threads, provider, artifact_state, artifact_layers, notes)
    _, scales = _dequantized(info, plan)
    result = LayerParityResult(kind, len(x), notes=notes, mode="end_to_end")
    exposed = expose_outputs(info.model, [layer.output for layer in info.layers]).SerializeToString()
    for level in levels:
        session = make_session(exposed, provider, level, plan, threads)
        values = run_batched(session, x, outputs=[layer.output for layer in info.layers])
        for layer, y in zip(info.layers, values):
            if layer.name in refs:
                result.layers.append(_errors(layer, scales[layer.name], y, refs[layer.name], level, kind))
    return result


def _local_parity(info: ModelInfo, x: np.ndarray, levels: list[str], plan: SessionPlan, threads: int,
                  provider: ProviderPlan, artifact_state: Mapping[str, np.ndarray] | None,
                  artifact_layers: list[str] | None, notes: list[str]) -> LayerParityResult:
    """Each layer against its twin with reference weights, on the same input activation, in the same run."""
    own, scales = _dequantized(info, plan)
    weights: dict[str, np.ndarray] = {}
    if artifact_state is not None:
        shapes = {name: value.shape for name, value in own.items()}
        weights, more = match_weights(info, artifact_state, list(artifact_layers or []), shapes)
        notes.extend(more)
    kind = "artifact_weights" if weights else "dequantized"
    result = LayerParityResult(kind, len(x), notes=notes, mode="local")
    model = with_reference_twins(info, {**own, **weights}).SerializeToString()
    names = [name for layer in info.layers for name in (layer.output, f"{layer.output}__reference")]
    for level in levels:
        values = run_batched(make_session(model, provider, level, plan, threads), x, outputs=names)
        for i, layer in enumerate(info.layers):
            result.layers.append(_errors(layer, scales[layer.name], values[2 * i], values[2 * i + 1], level,
                                         kind if layer.name in weights or not weights else "dequantized"))
    return result
