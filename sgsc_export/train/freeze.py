"""``freeze``: the deployable module and the integer state of a trained, quantised model (the artifact's
``model.safetensors`` and ``quant.safetensors``).

It belongs to compression, not to the artifact: it needs the quantised layers (:mod:`sgsc_export.method.nn`),
which a reader of the artifact never loads.

A layer twin becomes its float class; a GRU/LSTM/attention twin (:mod:`sgsc_export.method.packed`) becomes its
float class too, with each quantised tensor back as the parameter of that name, in the module's own parameter
order (so the state keys are the float model's: ``rnn.weight_ih_l0``). The integer state is keyed by the
quantised layer's name either way: ``conv.weight_int``, ``rnn.weight_ih_l0.weight_int``.

Float parameters are stored at float16 precision (``to_half``), as GGML's formats store their block scales:
each channel's scale ``2^e`` and every other float tensor of the module — biases, the norms' affine
parameters and statistics, embeddings left in float — is rounded to the nearest float16 value, held as
float32, where all its nonzero values lie in float16's normal range (2^-14 … 65504; a tensor that does not,
such as a variance near 0, stays as it is). An additive tensor (a bias, a BatchNorm's running mean: a name
ending in ``bias`` or ``running_mean``) may also take float16's subnormals: a value below 2^-14 moves by at
most 2^-25 there, which nothing added to an activation notices. The change is at most 2^-11 of each value
(2^-25 absolute for an additive one's subnormals), far below what the
integers' rounding moves, and it is made before the kept model is measured (the manifest's metrics and
target are of the rounded model); every profile exports the same values, and ``compact`` stores them in half
the bytes. A channel whose integers are all 0 takes the median scale of the others' (its values are 0
whatever the scale; its learned exponent may have drifted out of range).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from sgsc_export.method import core
from sgsc_export.method._mixin import _QMixin
from sgsc_export.method.nn import float_class, quantized_layers
from sgsc_export.method.packed import PackedTwin, QMultiheadAttention, QWeight

__all__ = ["freeze", "to_half"]

_HALF_TINY, _HALF_MAX = 2.0**-14, 65504.0  # float16's smallest normal and largest finite magnitude


_ADDITIVE = ("bias", "running_mean")  # names of tensors added to an activation (see the module docstring)


def to_half(t: torch.Tensor, additive: bool = False) -> torch.Tensor:
    """``t`` rounded to the nearest float16 values (as ``t``'s dtype) where every nonzero ``|t|`` lies in
    float16's normal range (``additive``: at most its largest finite value); else ``t`` itself. Integer
    tensors are returned as they are."""
    if not t.is_floating_point() or t.numel() == 0:
        return t
    a = t.detach().abs()
    nonzero = a[a > 0]
    if nonzero.numel() and (not bool(torch.isfinite(nonzero).all()) or float(nonzero.max()) > _HALF_MAX
                            or (not additive and float(nonzero.min()) < _HALF_TINY)):
        return t
    return t.detach().to(torch.float16).to(t.dtype)


def _scale(layer: _QMixin, wi: torch.Tensor) -> torch.Tensor:
    """``layer``'s scales 2^e at float16 precision; a row of zero integers at the median of the others'."""
    scale = layer.scale()
    live = wi.reshape(len(scale), -1).ne(0).any(1)
    if not bool(live.all()):
        fill = scale[live].median() if bool(live.any()) else torch.tensor(1.0)
        scale = torch.where(live, scale, fill.to(scale.dtype))
    return to_half(scale)


def _integers(name: str, layer: _QMixin, quant: dict[str, torch.Tensor], made: set[int]) -> nn.Parameter:
    """Record ``layer``'s integer state under ``name`` in ``quant``; return its weight, integers × scale,
    whose id goes into ``made``."""
    wi = layer.integer_weight()
    scale = _scale(layer, wi)
    bits = core.stored_bits(layer.b).reshape(-1)
    quant[f"{name}.weight_int"] = wi.contiguous()
    quant[f"{name}.scale"] = scale.contiguous()
    quant[f"{name}.exponent"] = layer.e.detach().reshape(-1).to(torch.float32).contiguous()
    quant[f"{name}.bits"] = bits.to(torch.uint8).contiguous()
    quant[f"{name}.mask"] = (bits > 0).to(torch.uint8).contiguous()
    shape = (-1,) + (1,) * (wi.dim() - 1)
    weight = nn.Parameter(wi.to(torch.float32) * scale.reshape(shape))
    made.add(id(weight))  # integers × scale exactly: not rounded again (``freeze``)
    return weight


def _plain(twin: nn.Module) -> nn.Module:
    cls = float_class(twin)  # nn.Linear, nn.GRU, ..., or the user's subclass the twin was made from
    plain = cls.__new__(cls)
    plain.__dict__ = twin.__dict__.copy()
    return plain


def _replace(module: nn.Module, name: str, new: nn.Module) -> nn.Module:
    if not name:
        return new
    parent, _, child = name.rpartition(".")
    setattr(module.get_submodule(parent), child, new)
    return module


def _freeze_packed(name: str, twin: PackedTwin, quant: dict[str, torch.Tensor], made: set[int]) -> nn.Module:
    plain = _plain(twin)
    qweights = twin.qweights()
    params = {}
    for pname in twin.float_order:
        params[pname] = (_integers(f"{name}.{pname}" if name else pname, qweights[pname], quant, made)
                         if pname in qweights else twin._parameters[pname])
    if isinstance(twin, QMultiheadAttention) and twin.in_proj_bias is not None:
        params["in_proj_bias"] = nn.Parameter(twin.qbias().detach().clone())
    plain._parameters = params
    plain._modules = {k: v for k, v in twin._modules.items() if not isinstance(v, QWeight)}
    del plain.__dict__["float_order"]
    if isinstance(plain, nn.RNNBase):
        plain._init_flat_weights()
    return plain


@torch.no_grad()
def freeze(qmodel: nn.Module) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """A plain copy of a quantised model, and the integer state of its quantised layers.

    Every quantised layer becomes its float class with ``weight = weight_int × scale`` (exactly what the
    quantised forward computes) and its zero-bit channels' bias set to 0 (as masked in training); a packed
    twin's tensors likewise (an attention twin's ``in_proj_bias`` masked, a GRU/LSTM's biases as they are).
    Scales and every other float tensor are at float16 precision (see the module docstring).
    """
    module = copy.deepcopy(qmodel)
    quant: dict[str, torch.Tensor] = {}
    integers: set[int] = set()  # ids of the weights equal to integers × scale
    for name, layer in quantized_layers(module).items():
        if isinstance(layer, QWeight):
            continue  # its module's twin, below
        plain = _plain(layer)
        plain._parameters = {"weight": _integers(name, layer, quant, integers)}
        if "bias" in layer._parameters:  # Conv/Linear (None when bias=False); an Embedding has none
            bias = None if layer.bias is None else nn.Parameter(layer.qbias().detach().clone())
            plain._parameters["bias"] = bias
        plain._buffers = {}
        module = _replace(module, name, plain)
    twins = [(n, m) for n, m in module.named_modules() if isinstance(m, PackedTwin)]
    for name, twin in twins:
        module = _replace(module, name, _freeze_packed(name, twin, quant, integers))
    for owner in module.modules():
        for store in (owner._parameters, owner._buffers):
            for key, t in store.items():
                if t is not None and id(t) not in integers:
                    half = to_half(t.data, additive=key.endswith(_ADDITIVE))
                    if half is not t.data:
                        t.data = half
    module.eval()
    return module, quant

