"""GRU, LSTM and MultiheadAttention twins (issue 16, item 3): every weight tensor is quantised row by row, the
forward computes exactly what a float module holding q(w, b, e) computes, freezing gives that float module,
and attention heads whose value rows are all at zero bits cost nothing and leave the output unchanged."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from sgsc_export import CompressConfig
from sgsc_export.method import core
from sgsc_export.method.coverage import float_weights
from sgsc_export.method.heads import remove_dead_heads_
from sgsc_export.method.nn import layer_kind, prepare_, quantized_layers
from sgsc_export.method.packed import QGRU, QLSTM, QMultiheadAttention, QWeight
from sgsc_export.method.pruning import refresh_in_alive_
from sgsc_export.train.freeze import freeze, to_half

RNNS = [(cls, batch_first, layers, bidirectional) for cls in (nn.GRU, nn.LSTM)
        for batch_first, layers, bidirectional in ((True, 1, False), (False, 2, True), (True, 2, False))]


def _weight_names(layers: int, bidirectional: bool) -> list[str]:
    suffixes = ["", "_reverse"] if bidirectional else [""]
    return [f"weight_{t}_l{k}{s}" for k in range(layers) for s in suffixes for t in ("ih", "hh")]


def _kill_rows_(layers: dict[str, nn.Module]) -> None:
    with torch.no_grad():
        for layer in layers.values():
            layer.b.view(-1)[::3] = -1.0  # every third row at zero bits


def _half_exact_(model: nn.Module) -> None:
    """Integer exponents (2^e exact in float16) and float16-exact parameters: ``freeze``'s rounding to float16
    (``to_half``) then changes nothing, and the frozen module must reproduce the twin exactly."""
    with torch.no_grad():
        for layer in quantized_layers(model).values():
            layer.e.copy_(layer.e.round())
        for p in model.parameters():
            p.copy_(to_half(p))


def _reference(module: nn.Module, twin: nn.Module) -> nn.Module:
    """The float module with each quantised tensor replaced by q(w, b, e), written without the twin's code."""
    ref = copy.deepcopy(module)
    with torch.no_grad():
        for name, w in twin.qweights().items():
            getattr(ref, name).copy_(core.quantize(w.weight, w.b, w.e))
    return ref


@pytest.mark.parametrize("cls, batch_first, layers, bidirectional", RNNS)
def test_recurrent_twin_quantises_every_row_and_freezes_to_its_float_module(cls, batch_first, layers,
                                                                            bidirectional):
    torch.manual_seed(0)
    rnn = cls(5, 6, num_layers=layers, batch_first=batch_first, bidirectional=bidirectional)
    model = nn.Sequential(rnn)
    prepare_(model, CompressConfig(init_bits=3))
    twin = model[0]
    assert isinstance(twin, (QGRU, QLSTM)) and isinstance(twin, cls)
    names = _weight_names(layers, bidirectional)
    qlayers = quantized_layers(model)
    assert list(qlayers) == [f"0.{n}" for n in names]
    gates = 3 if cls is nn.GRU else 4
    for layer in qlayers.values():
        assert isinstance(layer, QWeight) and layer_kind(layer) == cls.__name__
        assert layer.b.shape == (gates * 6, 1)  # one bit-depth per row: a gate of a hidden unit
    assert float_weights(model) == []
    _kill_rows_(qlayers)
    _half_exact_(model)
    ref = _reference(rnn, twin)
    x = torch.randn((3, 7, 5) if batch_first else (7, 3, 5))
    y, _ = twin(x)
    assert torch.allclose(y, ref(x)[0], atol=1e-6) and not torch.allclose(y, rnn(x)[0], atol=1e-3)
    y.square().sum().backward()
    for layer in qlayers.values():
        assert layer.b.grad is not None and layer.e.grad is not None and layer.weight.grad is not None
    assert all(isinstance(w, nn.Parameter) for w in twin._flat_weights)  # masters again after the forward
    # zero-bit rows are exactly 0; biases are not masked (no recurrent row is removed)
    for layer in qlayers.values():
        assert torch.equal(layer.integer_weight()[::3], torch.zeros_like(layer.integer_weight()[::3]))
    assert torch.equal(twin.bias_ih_l0, rnn.bias_ih_l0)

    frozen, quant = freeze(model)
    plain = frozen[0]
    assert type(plain) is cls
    assert list(plain.state_dict()) == list(rnn.state_dict())  # the float model's keys, in its order
    with torch.no_grad():
        assert torch.allclose(plain(x)[0], ref(x)[0], atol=1e-6)
        for n in names:
            w = quant[f"0.{n}.weight_int"].float() * quant[f"0.{n}.scale"][:, None]
            assert torch.equal(getattr(plain, n), w)


def test_a_projected_lstm_stays_float_and_is_reported():
    model = nn.Sequential(nn.LSTM(4, 6, proj_size=3), nn.Linear(3, 2))
    left = prepare_(model, CompressConfig())
    assert type(model[0]) is nn.LSTM and left == ["0"]
    reasons = {e["name"]: e["reason"] for e in float_weights(model)}
    assert reasons == {"0.weight_ih_l0": "unsupported", "0.weight_hh_l0": "unsupported",
                       "0.weight_hr_l0": "unsupported"}


@pytest.mark.parametrize("kdim", [None, 3])
def test_attention_twin_quantises_in_proj_rows_and_masks_their_bias(kdim):
    torch.manual_seed(0)
    attn = nn.MultiheadAttention(8, 2, batch_first=True, kdim=kdim, vdim=kdim).eval()
    model = nn.Sequential(attn)
    order = list(attn._parameters)
    prepare_(model, CompressConfig(init_bits=3))
    twin = model[0]
    assert isinstance(twin, QMultiheadAttention)
    tensors = ["in_proj_weight"] if kdim is None else ["q_proj_weight", "k_proj_weight", "v_proj_weight"]
    assert set(quantized_layers(model)) == {"0.out_proj", *(f"0.{n}" for n in tensors)}
    _kill_rows_({n: twin.get_submodule(n) for n in tensors})
    _half_exact_(model)
    ref = _reference(attn, twin)
    alive = torch.cat([twin.get_submodule(n).channel_alive() for n in tensors]).float()
    with torch.no_grad():
        ref.in_proj_bias.mul_(alive)
        op = twin.out_proj
        ref.out_proj.weight.copy_(core.quantize(op.weight, op.b, op.e))
    q = torch.randn(3, 5, 8)
    kv = torch.randn(3, 5, kdim or 8)
    want = ref(q, kv, kv, need_weights=False)[0]
    got = twin(q, kv, kv, need_weights=False)[0]  # grad enabled: the slow path
    assert torch.allclose(got, want, atol=1e-6) and not torch.allclose(got, attn(q, kv, kv)[0], atol=1e-3)
    with torch.no_grad():
        assert torch.allclose(twin(q, q if kdim is None else kv, kv)[0],
                              ref(q, q if kdim is None else kv, kv)[0], atol=1e-6)  # fast path where possible
    got.square().sum().backward()
    assert all(twin.get_submodule(n).b.grad is not None for n in tensors)
    assert list(twin._parameters) == [p for p in order if p not in tensors]  # order kept: resume maps Adam
    with pytest.raises(Exception):  # noqa: B017 - any failure inside the block
        twin(torch.randn(3, 5, 7), kv, kv)
    assert not set(tensors) & set(twin._parameters) and isinstance(twin.in_proj_bias, nn.Parameter)

    frozen, quant = freeze(model)
    assert type(frozen[0]) is nn.MultiheadAttention
    assert list(frozen[0].state_dict()) == list(attn.state_dict())
    with torch.no_grad():
        assert torch.allclose(frozen[0](q, kv, kv)[0], want, atol=1e-6)
        assert torch.equal(frozen[0].in_proj_bias, ref.in_proj_bias)


def _attention_with_dead_head(**kwargs) -> tuple[nn.Module, QMultiheadAttention]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.MultiheadAttention(8, 4, batch_first=True, **kwargs))
    prepare_(model, CompressConfig(init_bits=4))
    twin = model[0]
    with torch.no_grad():
        twin.in_proj_weight.b.view(-1)[16 + 2:16 + 4] = -1.0  # head 1 (rows 2..3 of the value block) dead
    refresh_in_alive_(model, {})
    return model, twin


def test_a_head_whose_value_rows_are_dead_costs_nothing_and_changes_nothing():
    model, twin = _attention_with_dead_head()
    assert twin.out_proj.in_alive.tolist() == [1, 1, 0, 0, 1, 1, 1, 1]  # the size term: columns read 0
    x = torch.randn(2, 6, 8)
    with torch.no_grad():
        before = twin(x, x, x)[0]
        assert remove_dead_heads_(model) == {"0": 1}
        after = twin(x, x, x)[0]
    alive = twin.in_proj_weight.channel_alive()
    assert not alive[[2, 3, 10, 11, 18, 19]].any() and alive.sum() == 24 - 6  # q, k and v rows of head 1
    assert twin.in_proj_weight.weight.shape == (24, 8)  # torch ties the head width to embed_dim: masked
    assert torch.equal(before, after)


def test_bias_v_keeps_every_head():
    model, twin = _attention_with_dead_head(add_bias_kv=True)
    assert twin.out_proj.in_alive.tolist() == [1] * 8  # bias_v reaches every column
    assert remove_dead_heads_(model) == {}
    assert {e["name"]: (e["module"], e["reason"]) for e in float_weights(model)} == {
        "0.bias_k": ("MultiheadAttention", "unsupported"), "0.bias_v": ("MultiheadAttention", "unsupported")}


@pytest.mark.parametrize("factory", ["gru_bi2", "vit"])
def test_a_resumed_run_gives_the_same_artifact(factory, tmp_path, digits_split, monkeypatch):
    """Checkpoints of the twins (rnn.weight_ih_l0.b, …, and Adam's moments in the parameter order that the
    attention twin's forward keeps) resume to the same bytes."""
    from sgsc_export import compress
    from sgsc_export.train import compress as api
    from tests.converters import recurrent_models

    cfg = CompressConfig(steps=40, finetune_steps=4, float_epochs=1, gamma=0.05, init_bits=4,
                         restore_every=10, prune_every=10, checkpoint_every=20, seed=1, max_drop=100)
    make = getattr(recurrent_models, factory)
    a, c = tmp_path / "a", tmp_path / "c"
    compress(make(), digits_split, cfg, out_dir=a)
    real_save = api.save_checkpoint

    def save_then_interrupt(path, payload):
        real_save(path, payload)
        raise KeyboardInterrupt  # right after the step-20 checkpoint

    monkeypatch.setattr(api, "save_checkpoint", save_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        compress(make(), digits_split, cfg, out_dir=c)
    monkeypatch.setattr(api, "save_checkpoint", real_save)
    compress(make(), digits_split, cfg, out_dir=c, resume=True)
    for name in ("manifest.json", "history.json", "model.safetensors", "quant.safetensors"):
        assert (c / name).read_bytes() == (a / name).read_bytes(), name
