"""Loading an untrusted ONNX file without reading outside its folder or allocating what it merely declares.

Torch-free (imports onnx and numpy only), shared by ``sgsc inspect`` (converters.inspection) and
``sgsc validate`` (runtime_checks.graph). :func:`load_onnx_bounded` is the one way both read a model:

1. the ``.onnx`` file's size is checked against ``MAX_INPUT_BYTES`` before it is read;
2. every external-data ``location`` is resolved beside the model file only — never against the working
   directory — and refused when it is absolute, contains ``..``, or (through a symlink) resolves outside the
   model's folder; its ``offset``/``length`` are checked against the data file's size and the tensor's
   declared shape before a byte is read, and the total against ``MAX_INPUT_BYTES``;
3. every tensor the file declares (initializers, sparse initializers, ``Constant`` attributes, in every
   subgraph) is checked against ``MAX_ONNX_ELEMENTS``, and its stored bytes against its declared shape.

:func:`check_static_sizes` then infers shapes and refuses any value whose static size exceeds
``MAX_ONNX_ELEMENTS`` (without onnx's data propagation: it materialises a constant ``Range`` to propagate it,
a bomb of its own; a size-creating op whose size then stays unknown is refused instead); under
``require_static_constants`` (what ``inspect`` evaluates) every value computed from constants must have a
fully known static shape, so nothing can grow past the limit while it is evaluated. The limits live in
:mod:`sgsc_export._limits`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import onnx
from onnx import external_data_helper

from sgsc_export._limits import input_limit_message, max_input_bytes, max_onnx_elements, onnx_limit_message

__all__ = ["check_external_data", "check_static_sizes", "iter_tensors", "load_onnx_bounded"]

_BITS = {onnx.TensorProto.INT4: 4, onnx.TensorProto.UINT4: 4, onnx.TensorProto.FLOAT4E2M1: 4}
if hasattr(onnx.TensorProto, "INT2"):
    _BITS.update({onnx.TensorProto.INT2: 2, onnx.TensorProto.UINT2: 2})


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _count(dims) -> int:
    n = 1
    for d in dims:
        n *= int(d)
    return n


def _graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _graphs(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from _graphs(g)


def iter_tensors(model: onnx.ModelProto) -> Iterator[tuple[str, onnx.TensorProto | onnx.SparseTensorProto]]:
    """Every tensor the file stores, with a label: initializers, sparse initializers and node attributes."""
    for graph in _graphs(model.graph):
        for t in graph.initializer:
            yield f"initializer {t.name!r}", t
        for s in graph.sparse_initializer:
            yield f"sparse initializer {s.values.name!r}", s
        for node in graph.node:
            where = f"{node.op_type} node {node.name or (node.output[0] if node.output else '?')!r}"
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.TENSOR:
                    yield f"{where} attribute {attr.name!r}", attr.t
                elif attr.type == onnx.AttributeProto.TENSORS:
                    for t in attr.tensors:
                        yield f"{where} attribute {attr.name!r}", t
                elif attr.type == onnx.AttributeProto.SPARSE_TENSOR:
                    yield f"{where} attribute {attr.name!r}", attr.sparse_tensor
                elif attr.type == onnx.AttributeProto.SPARSE_TENSORS:
                    for s in attr.sparse_tensors:
                        yield f"{where} attribute {attr.name!r}", s


def _stored_bytes(t: onnx.TensorProto) -> int | None:
    """Bytes the declared shape needs in ``raw_data`` (None for strings and unknown types)."""
    if t.data_type in _BITS:
        return (_count(t.dims) * _BITS[t.data_type] + 7) // 8
    try:
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
    except Exception:  # noqa: BLE001 - unknown or string types
        return None
    return None if t.data_type == onnx.TensorProto.STRING else _count(t.dims) * itemsize


def _check_declared(model: onnx.ModelProto, label: str, error: type[Exception]) -> None:
    limit = max_onnx_elements()
    for where, t in iter_tensors(model):
        if isinstance(t, onnx.SparseTensorProto):
            if any(d < 0 for d in t.dims):
                raise error(f"{label}: {where} declares a negative "
                            f"dimension {list(t.dims)}; the file is malformed")
            n = _count(t.dims)  # onnxruntime and onnx.reference densify sparse tensors
            if n > limit:
                raise error(onnx_limit_message(f"{label}: {where} (dense shape {list(t.dims)})", n, limit))
            continue
        if any(d < 0 for d in t.dims):
            raise error(f"{label}: {where} declares a negative "
                        f"dimension {list(t.dims)}; the file is malformed")
        n = _count(t.dims)
        if n > limit:
            raise error(onnx_limit_message(f"{label}: {where} (shape {list(t.dims)})", n, limit))
        if t.data_location != onnx.TensorProto.EXTERNAL and t.HasField("raw_data"):
            need = _stored_bytes(t)
            if need is not None and need != len(t.raw_data):
                raise error(f"{label}: {where} declares shape {list(t.dims)} ({need} bytes) but stores "
                            f"{len(t.raw_data)} bytes; the file is corrupt")


def _external_info(t: onnx.TensorProto, where: str, label: str,
                   error: type[Exception]) -> tuple[str, int, int | None]:
    entries = {e.key: e.value for e in t.external_data}
    location = entries.get("location", "")
    try:
        offset = int(entries.get("offset", "0") or 0)
        length = int(entries["length"]) if entries.get("length") not in (None, "") else None
    except ValueError:
        raise error(f"{label}: {where} has a non-integer external-data offset or length; the file is "
                    "corrupt") from None
    if offset < 0 or (length is not None and length < 0):
        raise error(f"{label}: {where} has a negative external-data offset or length; the file is corrupt")
    return location, offset, length


def check_external_data(model: onnx.ModelProto, model_path: str | os.PathLike,
                        error: type[Exception] = ValueError) -> int:
    """Check every external-data reference of ``model`` (read from ``model_path``); return their total bytes.

    A location must be a relative path with no ``..`` that, symlinks resolved, stays inside the model's folder
    and names a regular file; offset + length must lie within that file and length must equal what the
    tensor's declared shape needs. Nothing is read here.
    """
    label = str(model_path)
    # The folder of the path as given (what onnx and onnxruntime resolve against), its own symlinks resolved.
    folder = Path(os.path.abspath(model_path)).parent.resolve()
    total, limit = 0, max_input_bytes()
    for where, t in iter_tensors(model):
        if isinstance(t, onnx.SparseTensorProto):
            parts = [(f"{where} values", t.values), (f"{where} indices", t.indices)]
        else:
            parts = [(where, t)]
        for what, tensor in parts:
            if tensor.data_location != onnx.TensorProto.EXTERNAL:
                continue
            location, offset, length = _external_info(tensor, what, label, error)
            pieces = location.replace("\\", "/").split("/")
            if (not location or "\x00" in location or os.path.isabs(location)
                    or location.startswith(("/", "\\")) or (len(location) > 1 and location[1] == ":")
                    or ".." in pieces):
                raise error(f"{label}: {what} names external data {location!r}, outside the model's folder; "
                            "external data must be a file beside the model (refused, nothing read)")
            target = (folder / location).resolve()
            if target != folder and folder not in target.parents:
                raise error(f"{label}: {what} names external data {location!r}, which resolves outside the "
                            "model's folder (a symlink?); refused, nothing read")
            if not target.is_file():
                raise error(f"{label}: {what} names external data {location!r}, which is not a file beside "
                            "the model; copy it next to the .onnx file")
            size = target.stat().st_size
            if length is None:
                length = size - offset
            if offset + length > size:
                raise error(f"{label}: {what} declares external data {location!r} "
                            f"bytes {offset}..{offset + length} but the file holds {size}; it is truncated "
                            "or the model is corrupt")
            need = _stored_bytes(tensor)
            if need is not None and need != length:
                raise error(f"{label}: {what} declares shape {list(tensor.dims)} ({need} bytes) but its "
                            f"external data is {length} bytes; the file is corrupt")
            total += length
            if total > limit:
                raise error(input_limit_message(f"{label}: the model's external data", total, limit))
    return total


def load_onnx_bounded(path: str | os.PathLike, error: type[Exception] = ValueError) -> onnx.ModelProto:
    """Read ``path`` with its external data (checked by :func:`check_external_data`) and declared tensor sizes
    checked; every failure is one line in ``error``."""
    p = Path(path)
    label = str(p)
    if not p.is_file():
        raise error(f"{label}: no such model file; pass the path of an .onnx file")
    limit = max_input_bytes()
    size = p.stat().st_size
    if size > limit:
        raise error(input_limit_message(f"{label}: the .onnx file", size, limit))
    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises several unrelated types
        raise error(f"{label}: not a readable ONNX file ({type(exc).__name__}: {_first_line(exc)}); "
                    "check the path") from None
    if model.ir_version <= 0 or not model.graph.node:
        raise error(f"{label}: not an ONNX model (no IR version or an empty graph; an empty or foreign file "
                    "parses as an empty protobuf); check the path")
    _check_declared(model, label, error)
    total = size + check_external_data(model, p, error)
    if total > limit:
        raise error(input_limit_message(f"{label}: the model with its external data", total, limit))
    if any(t.data_location == onnx.TensorProto.EXTERNAL for _, t in iter_tensors(model)
           if isinstance(t, onnx.TensorProto)) or any(
               s.values.data_location == onnx.TensorProto.EXTERNAL or s.indices.data_location ==
               onnx.TensorProto.EXTERNAL
               for _, s in iter_tensors(model) if isinstance(s, onnx.SparseTensorProto)):
        try:
            with warnings.catch_warnings():  # onnx warns (several lines) about unknown external-data keys
                warnings.simplefilter("ignore")
                external_data_helper.load_external_data_for_model(model, str(Path(os.path.abspath(p)).parent))
        except Exception as exc:  # noqa: BLE001 - onnx raises several types for a bad reference
            raise error(f"{label}: cannot read its external data ({_first_line(exc)})") from None
    return model


def _static_count(value: onnx.ValueInfoProto) -> int | None:
    """Elements of a value with a fully known static shape, else None."""
    t = value.type
    if not t.HasField("tensor_type") or not t.tensor_type.HasField("shape"):
        return None
    n = 1
    for d in t.tensor_type.shape.dim:
        if not d.HasField("dim_value"):
            return None
        n *= int(d.dim_value)
    return n


def _known_factor(value: onnx.ValueInfoProto) -> int:
    """Product of the known dimensions of a value (symbolic ones count as 1)."""
    t = value.type
    n = 1
    if t.HasField("tensor_type") and t.tensor_type.HasField("shape"):
        for d in t.tensor_type.shape.dim:
            if d.HasField("dim_value"):
                n *= max(int(d.dim_value), 1)
    return n


def constant_values(graph: onnx.GraphProto) -> set[str]:
    """Names of the values of ``graph`` computed from initializers and Constant nodes alone."""
    const = {t.name for t in graph.initializer} | {s.values.name for s in graph.sparse_initializer}
    inputs = {v.name for v in graph.input} - const
    for node in graph.node:
        if all((name == "" or name in const) and name not in inputs for name in node.input):
            const.update(o for o in node.output if o)
    return const


_SMALL = 1 << 12  # initializers up to this many elements keep their values for shape inference (shapes, axes)


def _without_large_data(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` whose large main-graph initializers are graph inputs of the same type and shape:
    shape inference needs the values of small ones only (shapes, axes, ranges), and the copy stays small."""
    light = onnx.ModelProto()
    light.ir_version = model.ir_version
    light.opset_import.extend(model.opset_import)
    light.functions.extend(model.functions)
    src, g = model.graph, light.graph
    g.name = src.name
    for name in ("node", "input", "output", "value_info", "sparse_initializer"):
        getattr(g, name).extend(getattr(src, name))
    names = {v.name for v in src.input}
    for t in src.initializer:
        if _count(t.dims) <= _SMALL:
            g.initializer.append(t)
        elif t.name not in names:
            g.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    return light


def check_static_sizes(model: onnx.ModelProto, label: str, error: type[Exception] = ValueError,
                       require_static_constants: bool = False) -> int:
    """Infer shapes and refuse a value whose static size exceeds ``MAX_ONNX_ELEMENTS``.

    Every value computed from constants alone is what onnxruntime folds at session creation (and what
    ``inspect`` evaluates): its shape must be fully known, and within the limit. Under
    ``require_static_constants`` a constant value of unknown shape is refused too; otherwise only a
    size-creating op (ConstantOfShape, Expand, Tile, Range, Resize, …) on constants with an unknown output
    shape is. Returns the sum of the static element counts of every node output (what an evaluator holding all
    of them needs).
    """
    limit = max_onnx_elements()
    const = constant_values(model.graph)
    try:
        inferred = onnx.shape_inference.infer_shapes(_without_large_data(model), check_type=False,
                                                     strict_mode=False, data_prop=False)
    except Exception as exc:  # noqa: BLE001 - onnx raises several types for an inconsistent graph
        raise error(f"{label}: shape inference failed ({_first_line(exc)}); "
                    "the graph is inconsistent") from None
    graph = inferred.graph
    infos = {v.name: v for v in list(graph.value_info) + list(graph.output) + list(graph.input)}
    total = 0
    for node in graph.node:
        for name in node.output:
            if not name:
                continue
            info = infos.get(name)
            count = None if info is None else _static_count(info)
            if count is not None and count > limit:
                raise error(onnx_limit_message(f"{label}: {node.op_type} output {name!r}", count, limit))
            total += count or 0
            if info is not None and count is None and _known_factor(info) > limit:
                raise error(onnx_limit_message(f"{label}: {node.op_type} output {name!r} (known dimensions)",
                                               _known_factor(info), limit))
            if name in const and count is None and (require_static_constants or node.op_type in _SIZE_OPS):
                raise error(f"{label}: {node.op_type} output {name!r} is computed from constants but its "
                            "size cannot be inferred; refused rather than evaluated")
        if node.op_type in ("Loop", "Scan") and all(n in const or n == "" for n in node.input):
            raise error(f"{label}: a {node.op_type} over constants cannot "
                        "be bounded; refused rather than evaluated")
    return total


_SIZE_OPS = frozenset({"ConstantOfShape", "Expand", "Tile", "Range", "Resize", "Upsample", "Pad", "OneHot",
                       "RandomNormal", "RandomUniform", "EyeLike", "Loop", "Scan", "If", "Einsum", "MatMul",
                       "Gemm", "Gather", "GatherND", "GatherElements", "Concat", "Reshape", "CenterCropPad",
                       "Col2Im", "SequenceConstruct", "ConcatFromSequence", "SplitToSequence", "Compress",
                       "NonZero", "Unique", "TopK", "DFT", "STFT", "Mul", "Add", "Sub", "Div", "Where"})
