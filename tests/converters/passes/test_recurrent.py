"""unstack_directions, and locate_weights on GRU/LSTM weights: a bidirectional node's stacked W/R become one
initializer a direction, each torch tensor is found in ONNX's gate order, and tensors the exporter shared
(equal values) get an initializer each; every profile then computes torch's output."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

import converters.passes.locate as locate
from converters import export
from converters.passes import ExportContext, unstack_directions
from sgsc_export.errors import ExportError
from tests.converters.conftest import PROFILES, FakeCompressed
from tests.converters.passes.toy import run
from tests.converters.sessions import safe_session

H, K, T = 3, 4, 5


def _gru_graph(directions: int) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=s).astype(np.float32), n)
             for n, s in (("W", (directions, 3 * H, K)), ("R", (directions, 3 * H, H)),
                          ("B", (directions, 6 * H)))]
    node = helper.make_node("GRU", ["x", "W", "R", "B"], ["y"], hidden_size=H, linear_before_reset=1,
                            direction="bidirectional" if directions == 2 else "forward")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [T, 2, K])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [T, directions, 2, H])
    graph = helper.make_graph([node], "gru", [x], [y], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    return model


def _context(proto: onnx.ModelProto) -> ExportContext:
    return ExportContext(model=ir.serde.deserialize_model(proto), profile="portable", opset=21,
                         manifest={"layers": []}, manifest_sha256="0" * 64, version="test")


def test_unstack_splits_each_direction_and_keeps_the_output():
    proto = _gru_graph(2)
    x = np.random.default_rng(1).normal(size=(T, 2, K)).astype(np.float32)
    ctx = _context(proto)
    unstack_directions(ctx)
    graph = ctx.model.graph
    gru = next(n for n in graph if n.op_type == "GRU")
    for index in (1, 2):
        concat = gru.inputs[index].producer()
        assert concat.op_type == "Concat" and [tuple(v.const_value.shape) for v in concat.inputs] == [
            (1, 3 * H, K if index == 1 else H)] * 2
    assert gru.inputs[3].name == "B" and {"W", "R"}.isdisjoint(graph.initializers)  # B stays as it was
    onnx.checker.check_model(ir.serde.serialize_model(ctx.model), full_check=True)
    assert np.array_equal(run(ctx, x), run(proto, x))
    with pytest.raises(ExportError, match="^pass unstack_directions: requires no layers located yet"):
        ctx.layers.append(object())
        unstack_directions(ctx)


def test_unstack_leaves_one_direction_alone():
    ctx = _context(_gru_graph(1))
    before = ir.serde.serialize_model(ctx.model).SerializeToString()
    unstack_directions(ctx)
    assert ir.serde.serialize_model(ctx.model).SerializeToString() == before


class _Stacked(nn.Module):
    """Two LSTM layers (input width = hidden width, so every tensor is [4H, H]) on a [N, T, H] input."""

    def __init__(self, bidirectional: bool) -> None:
        super().__init__()
        self.rnn = nn.LSTM(H, H, num_layers=2, batch_first=True, bidirectional=bidirectional)
        self.fc = nn.Linear(2 * H if bidirectional else H, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.rnn(x)[0][:, -1])


def _fake_lstm(bidirectional: bool, zero: tuple[str, ...]) -> FakeCompressed:
    """An artifact-like object whose LSTM tensors are random integers × per-row scales; the ``zero`` ones are
    all at zero bits (exactly 0: equal tensors the exporter may store once)."""
    rng = np.random.default_rng(3)
    torch.manual_seed(3)
    module = _Stacked(bidirectional).eval()
    quant, layers = {}, []
    for name, w in module.rnn.named_parameters():
        if not name.startswith("weight_"):
            continue
        rows = w.shape[0]
        bits = np.zeros(rows, np.uint8) if name in zero else rng.integers(1, 5, rows).astype(np.uint8)
        half = (1 << np.maximum(bits.astype(int) - 1, 0))[:, None]
        lo, hi = np.where(bits[:, None] == 0, 0, -half), np.where(bits[:, None] == 0, 1, half)
        ints = rng.integers(lo, hi, size=tuple(w.shape)).astype(np.int8)
        scale = np.exp2(rng.integers(-6, -1, rows)).astype(np.float32)
        with torch.no_grad():
            w.copy_(torch.from_numpy(ints.astype(np.float32) * scale[:, None]))
        key = f"rnn.{name}"
        quant |= {f"{key}.weight_int": torch.from_numpy(ints), f"{key}.scale": torch.from_numpy(scale),
                  f"{key}.bits": torch.from_numpy(bits)}
        layers.append({"name": key, "kind": "LSTM", "weight_shape": list(w.shape), "bits": bits.tolist()})
    manifest = {"format": "sgsc-artifact", "format_version": 1, "layers": layers,
                "model": {"input_shape": [1, T, H], "task": "classification"},
                "preservation": {"sha256": "0" * 64}}
    x = rng.standard_normal((32, T, H)).astype(np.float32)
    return FakeCompressed(module, manifest, quant, {"x_preservation": x})


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("bidirectional", [True, False])
def test_every_lstm_tensor_is_dequantised_in_gate_order_with_its_scales(tmp_path, profile, bidirectional,
                                                                       monkeypatch):
    """Unidirectional: three tensors at zero bits are equal [1, 4H, H] initializers, which the exporter
    stores once; each gets its own copy. Bidirectional: each direction its own initializer."""
    zero = ("weight_hh_l0", "weight_ih_l0_reverse") if bidirectional else ("weight_hh_l0", "weight_ih_l1",
                                                                           "weight_hh_l1")
    fake = _fake_lstm(bidirectional, zero)
    copies = []
    own_copy = locate._own_copy
    monkeypatch.setattr(locate, "_own_copy", lambda graph, value: copies.append(value.name) or own_copy(
        graph, value))
    result = export(fake, tmp_path / f"{profile}.onnx", profile)
    assert len(copies) == (0 if bidirectional else 2)
    model = onnx.load(str(result.path))
    scales = {n.input[1] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    names = [layer["name"] for layer in fake.manifest["layers"]]
    assert len(scales) == len(names)  # each tensor its own integers and scales
    if profile != "compact":  # compact renames every value (its metadata keeps the layer names)
        assert all(f"{name}.scale" in scales for name in names)
    assert [r.name for r in result.table.rows] == names
    x = fake.eval["x_preservation"]
    with torch.no_grad():
        ref = fake.module(torch.from_numpy(x)).numpy()
    got = safe_session(result.path).run(None, {"input": x})[0]
    if profile == "ort-int8":  # activation QDQ where the choice keeps agreement: the same predictions
        assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.9
    else:
        assert np.abs(got - ref).max() <= 1e-4 * float(np.abs(ref).max())
