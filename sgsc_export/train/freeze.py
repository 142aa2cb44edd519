"""``freeze``: the deployable module and the integer state of a trained, quantised model (the artifact's
``model.safetensors`` and ``quant.safetensors``).

It belongs to compression, not to the artifact: it needs the quantised layers (:mod:`sgsc_export.method.nn`),
which a reader of the artifact never loads.

A layer twin becomes its float class; a GRU/LSTM/attention twin (:mod:`sgsc_export.method.packed`) becomes its
float class too, with each quantised tensor back as the parameter of that name, in the module's own parameter
order (so the state keys are the float model's: ``rnn.weight_ih_l0``). The integer state is keyed by the
quantised layer's name either way: ``conv.weight_int``, ``rnn.weight_ih_l0.weight_int``.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from sgsc_export.method import core
from sgsc_export.method._mixin import _QMixin
from sgsc_export.method.nn import float_class, quantized_layers
from sgsc_export.method.packed import PackedTwin, QMultiheadAttention, QWeight

__all__ = ["freeze"]


def _integers(name: str, layer: _QMixin, quant: dict[str, torch.Tensor]) -> nn.Parameter:
    """Record ``layer``'s integer state under ``name`` in ``quant``; return its weight, integers × scale."""
    wi = layer.integer_weight()
    scale = layer.scale()
    bits = core.stored_bits(layer.b).reshape(-1)
    quant[f"{name}.weight_int"] = wi.contiguous()
    quant[f"{name}.scale"] = scale.contiguous()
    quant[f"{name}.exponent"] = layer.e.detach().reshape(-1).to(torch.float32).contiguous()
    quant[f"{name}.bits"] = bits.to(torch.uint8).contiguous()
    quant[f"{name}.mask"] = (bits > 0).to(torch.uint8).contiguous()
    shape = (-1,) + (1,) * (wi.dim() - 1)
    return nn.Parameter(wi.to(torch.float32) * scale.reshape(shape))


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


def _freeze_packed(name: str, twin: PackedTwin, quant: dict[str, torch.Tensor]) -> nn.Module:
    plain = _plain(twin)
    qweights = twin.qweights()
    params = {}
    for pname in twin.float_order:
        params[pname] = (_integers(f"{name}.{pname}" if name else pname, qweights[pname], quant)
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
    """
    module = copy.deepcopy(qmodel)
    quant: dict[str, torch.Tensor] = {}
    for name, layer in quantized_layers(module).items():
        if isinstance(layer, QWeight):
            continue  # its module's twin, below
        plain = _plain(layer)
        plain._parameters = {"weight": _integers(name, layer, quant)}
        if "bias" in layer._parameters:  # Conv/Linear (None when bias=False); an Embedding has none
            bias = None if layer.bias is None else nn.Parameter(layer.qbias().detach().clone())
            plain._parameters["bias"] = bias
        plain._buffers = {}
        module = _replace(module, name, plain)
    twins = [(n, m) for n, m in module.named_modules() if isinstance(m, PackedTwin)]
    for name, twin in twins:
        module = _replace(module, name, _freeze_packed(name, twin, quant))
    module.eval()
    return module, quant
