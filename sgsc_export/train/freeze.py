"""``freeze``: the deployable module and the integer state of a trained, quantised model (the artifact's
``model.safetensors`` and ``quant.safetensors``).

It belongs to compression, not to the artifact: it needs the quantised layers (:mod:`sgsc_export.method.nn`),
which a reader of the artifact never loads.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from sgsc_export.method import core
from sgsc_export.method.nn import float_class, quantized_layers

__all__ = ["freeze"]


@torch.no_grad()
def freeze(qmodel: nn.Module) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """A plain copy of a quantised model, and the integer state of its quantised layers.

    Every quantised layer becomes its float class with ``weight = weight_int × scale`` (exactly what the
    quantised forward computes) and its zero-bit channels' bias set to 0 (as masked in training).
    """
    module = copy.deepcopy(qmodel)
    quant: dict[str, torch.Tensor] = {}
    for name, layer in quantized_layers(module).items():
        wi = layer.integer_weight()
        scale = layer.scale()
        bits = core.stored_bits(layer.b).reshape(-1)
        shape = (-1,) + (1,) * (wi.dim() - 1)
        plain_cls = float_class(layer)  # nn.Linear, or the user's subclass the twin was made from
        plain = plain_cls.__new__(plain_cls)
        plain.__dict__ = layer.__dict__.copy()
        plain._parameters = {"weight": nn.Parameter(wi.to(torch.float32) * scale.reshape(shape))}
        if "bias" in layer._parameters:  # Conv/Linear (None when bias=False); an Embedding has none
            bias = None if layer.bias is None else nn.Parameter(layer.qbias().detach().clone())
            plain._parameters["bias"] = bias
        plain._buffers = {}
        parent, _, child = name.rpartition(".")
        setattr(module.get_submodule(parent), child, plain)
        quant[f"{name}.weight_int"] = wi.contiguous()
        quant[f"{name}.scale"] = scale.contiguous()
        quant[f"{name}.exponent"] = layer.e.detach().reshape(-1).to(torch.float32).contiguous()
        quant[f"{name}.bits"] = bits.to(torch.uint8).contiguous()
        quant[f"{name}.mask"] = (bits > 0).to(torch.uint8).contiguous()
    module.eval()
    return module, quant
