"""Every weight is quantised or reported (issue 16, item 3): Conv/Linear subclasses are found by isinstance
(``MultiheadAttention.out_proj`` included), GRU weights and ``MultiheadAttention.in_proj_weight`` are
quantised tensors of their modules' twins, weights without a twin are named in one warning line and the
manifest, and the size ratio is over all of the model's weights."""

from __future__ import annotations

import copy
import hashlib
import math
import textwrap

import numpy as np
import pytest
import torch
from torch import nn

from sgsc_export import CompressConfig
from sgsc_export.method import core
from sgsc_export.method.coverage import float_weights
from sgsc_export.method.nn import QConv2d, QLinear, is_quantized, prepare_, quantized_layers

MODEL = textwrap.dedent('''
    import torch
    from torch import nn


    class MyConv(nn.Conv2d):  # no forward of its own: quantised
        def describe(self):
            return "mine"


    class ScaledConv(nn.Conv2d):  # its own forward: stays float, reported
        def forward(self, x):
            return super().forward(x) * 0.5


    class Cover(nn.Module):
        def __init__(self, num_classes=10):
            super().__init__()
            self.conv = MyConv(1, 8, 3, padding=1)
            self.scaled = ScaledConv(8, 8, 1)
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
            self.rnn = nn.GRU(8, 12, batch_first=True)
            self.pos = nn.Parameter(0.1 * torch.randn(1, 64, 8))  # a bare parameter of the user's module
            self.fc = nn.Linear(12, num_classes)

        def forward(self, x):
            h = torch.relu(self.conv(x))
            h = (h + self.scaled(h)).flatten(2).transpose(1, 2) + self.pos
            a, _ = self.attn(h, h, h, need_weights=False)
            r, _ = self.rnn(a)
            return self.fc(r[:, -1])


    def make(num_classes=10):
        return Cover(num_classes)
''')

# independently of the code under test: what stays float, from the architecture above
E, H = 8, 12
EXPECTED_FLOAT = [("scaled.weight", "ScaledConv", 8 * 8 * 1 * 1, "own forward"),
                  ("pos", "Cover", 64 * 8, "unsupported")]
QUANTISED = {"conv": 8 * 1 * 3 * 3, "attn.out_proj": E * E, "attn.in_proj_weight": 3 * E * E,
             "rnn.weight_ih_l0": 3 * H * E, "rnn.weight_hh_l0": 3 * H * H, "fc": 10 * H}
KINDS = {"conv": "Conv2d", "attn.out_proj": "Linear", "attn.in_proj_weight": "MultiheadAttention",
         "rnn.weight_ih_l0": "GRU", "rnn.weight_hh_l0": "GRU", "fc": "Linear"}


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "cover_model.py"
    path.write_text(MODEL)
    return path


def _load(path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("cover_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _sorted(entries):
    return sorted((e["name"], e["module"], e["count"], e["reason"]) for e in entries)


def test_subclasses_are_quantised_unless_they_have_their_own_forward(model_file):
    um = _load(model_file)
    torch.manual_seed(0)
    m = um.make()
    prepare_(m, CompressConfig(init_bits=8))
    assert set(quantized_layers(m)) == set(QUANTISED)
    assert isinstance(m.conv, QConv2d) and isinstance(m.conv, um.MyConv) and m.conv.describe() == "mine"
    assert isinstance(m.attn.out_proj, QLinear)
    assert isinstance(m.attn.out_proj, nn.modules.linear.NonDynamicallyQuantizableLinear)
    assert type(m.scaled) is um.ScaledConv and not is_quantized(m.scaled)
    assert _sorted(float_weights(m)) == sorted(EXPECTED_FLOAT)


def test_out_proj_quantisation_takes_effect_inside_multihead_attention():
    torch.manual_seed(0)
    attn = nn.MultiheadAttention(8, 2, batch_first=True).eval()
    x = torch.randn(3, 5, 8)
    q = copy.deepcopy(attn)
    prepare_(q, CompressConfig(init_bits=3))
    op = q.out_proj
    with torch.no_grad():
        op.b[:2] = 0.0  # two channels at zero bits: weight and bias exactly 0
    # the reference: the float block with out_proj's weight replaced by q(w, b, e), its bias masked
    ref = copy.deepcopy(attn)
    with torch.no_grad():
        ref.out_proj.weight.copy_(core.quantize(op.weight, op.b, op.e))
        ref.out_proj.bias[:2] = 0.0
    want = ref(x, x, x, need_weights=False)[0]
    got = q(x, x, x, need_weights=False)[0]  # grad enabled: the slow path
    assert torch.allclose(got, want, atol=1e-6) and not torch.allclose(got, attn(x, x, x)[0], atol=1e-3)
    assert torch.equal(got[..., :2], torch.zeros_like(got[..., :2]))
    with torch.no_grad():
        assert torch.allclose(q(x, x, x, need_weights=False)[0], want, atol=1e-6)  # eval, no grad: fast path
    got.square().sum().backward()
    assert op.b.grad is not None and op.e.grad is not None and op.weight.grad is not None
    assert isinstance(op.weight, nn.Parameter) and isinstance(op.bias, nn.Parameter)  # masters are back
    with pytest.raises(Exception):  # noqa: B017 - any failure inside the block
        q(torch.randn(3, 5, 7), x, x)
    assert isinstance(op.weight, nn.Parameter)  # restored on failure too


def test_compress_reports_float_weights_counts_all_weights_and_exports(model_file, tmp_path, capfd,
                                                                         digits_split):
    import onnxruntime as ort

    import converters
    from sgsc_export import compress
    from sgsc_export.cli.tables import compress_summary, layer_table

    um = _load(model_file)
    torch.manual_seed(0)
    spec = {"factory": f"{model_file}:make", "kwargs": {},
            "source_sha256": hashlib.sha256(model_file.read_bytes()).hexdigest()}
    out = tmp_path / "run"
    cm = compress(um.make(), digits_split, CompressConfig(steps=60, finetune_steps=10, float_epochs=2,
                                                          gamma=0.01, seed=0), out_dir=out, model_spec=spec)
    err = capfd.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    n_float = sum(c for _, _, c, _ in EXPECTED_FLOAT)
    assert len(warnings) == 1, err
    line = warnings[0]
    assert line.startswith(f"warning: 2 tensors ({n_float:,} weights) stay float at 32 bits: ")
    for name, module, count, reason in EXPECTED_FLOAT:
        why = "" if reason == "unsupported" else f", {reason}"
        assert f"{name} ({module}{why}, {count:,})" in line
    assert "out_proj" not in line and "conv.weight" not in line and "fc.weight" not in line

    m = cm.manifest
    assert _sorted(m["float_weights"]) == sorted(EXPECTED_FLOAT)
    assert {layer["name"]: layer["kind"] for layer in m["layers"]} == KINDS
    assert {layer["name"]: math.prod(layer["weight_shape"]) for layer in m["layers"]} == QUANTISED
    out_proj = next(layer for layer in m["layers"] if layer["name"] == "attn.out_proj")
    assert any(b > 0 for b in out_proj["bits"])  # a live, quantised out_proj: the parity below says something
    t = m["totals"]
    n_q = sum(QUANTISED.values())  # no link to prune here: every weight is still present
    assert t["weights_start"] == n_q and t["ratio"] == t["quantized_bits"] / (32 * n_q)  # meaning unchanged
    assert t["float_weights"] == n_float and t["float_bits"] == 32 * n_float
    assert t["weights_all"] == n_q + n_float and t["fp32_bits_all"] == 32 * (n_q + n_float)
    want = (sum(layer["stored_bits"] for layer in m["layers"]) + 32 * n_float) / (32 * (n_q + n_float))
    assert t["ratio_all_weights"] == pytest.approx(want, rel=1e-12)
    assert t["ratio_all_weights"] > t["ratio"]
    table = layer_table(m)
    assert "stays float (2 tensors)" in table and f"{want:.4f}" in table.splitlines()[-1]
    assert table.splitlines()[-1].startswith("total, all weights")
    size = next(x for x in compress_summary(m, out, 1.0) if x.startswith("size"))
    n_all = n_q + n_float
    assert f"of {32 * n_all} fp32 bits (all {n_all} weights, {n_float} of them float)" in size
    assert f"ratio {want:.4f}" in size

    result = converters.export(out, tmp_path / "cover.onnx", "portable", model=f"{model_file}:make")
    x, ref = cm.eval["x_test"][:64], cm.eval["logits_test"][:64]
    opts = ort.SessionOptions()  # exact MatMulNBits, as `sgsc validate` runs it (runtime_checks.sessions)
    opts.add_session_config_entry("session.qdq_matmulnbits_accuracy_level", "0")
    session = ort.InferenceSession(str(result.path), opts, providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": x})[0]
    assert np.abs(got - ref).max() <= 1e-4 * float(np.abs(ref).max())
