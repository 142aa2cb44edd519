"""Which weights the method does not cover: every weight of a prepared model that no quantised layer stores.

A *weight* is a parameter with at least two dimensions — a matrix, a kernel, an embedding table (a
ConvTranspose2d or Conv3d kernel, an ``nn.RNN``'s or a projected LSTM's ``weight_ih_l0``, attention's
``bias_k``/``bias_v``, a user's bare ``nn.Parameter`` of positions). GRU/LSTM ``weight_ih_l0`` and
``weight_hh_l0`` and ``MultiheadAttention.in_proj_weight`` are quantised (:mod:`sgsc_export.method.packed`)
and counted with the quantised weights. Vectors (biases, norm scales) are not weights here, as the biases of
the quantised layers are not: the size ratio counts weights only. A weight that stays float is stored at 32
bits, so the ratio over all of the model's weights is

    ratio_all = (Σ_quantised bits + 32 · N_float) / (32 · (N_quantised + N_float)).

Each float weight is reported with its module's class and why it stays float: ``unsupported`` (no quantised
twin for that layer type or tensor), ``own forward`` (a Conv/Linear/Embedding subclass that overrides
``forward``, not swapped, see :mod:`sgsc_export.method.nn`) or ``excluded`` (``config.exclude`` or the
filter).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from sgsc_export.method.nn import float_class, is_quantized, is_twin, quantisable_base, twin_class

__all__ = ["float_weights", "float_weights_line"]


def _reason(module: nn.Module) -> str:
    if is_twin(module):  # a twin's tensor without a quantised form (attention's bias_k / bias_v)
        return "unsupported"
    if twin_class(module) is not None:
        return "excluded"
    return "own forward" if quantisable_base(module) is not None else "unsupported"


def float_weights(model: nn.Module) -> list[dict[str, Any]]:
    """``[{"name", "module", "count", "reason"}]``, in parameter order, for every weight (≥ 2 dimensions) of a
    prepared ``model`` outside its quantised layers; a tensor shared by two modules is listed once."""
    out = []
    for name, p in model.named_parameters():  # deduplicated: a tied tensor appears under its first name
        owner_name, _, _ = name.rpartition(".")
        owner = model.get_submodule(owner_name)
        if p.dim() < 2 or is_quantized(owner):
            continue
        cls = float_class(owner) if is_twin(owner) else type(owner)
        out.append({"name": name, "module": cls.__name__, "count": int(p.numel()),
                    "reason": _reason(owner)})
    return out


def float_weights_line(entries: list[dict[str, Any]], shown: int = 8) -> str | None:
    """The one warning line naming them (None when every weight is quantised); past ``shown`` tensors it
    points to the manifest."""
    if not entries:
        return None
    total = sum(e["count"] for e in entries)
    names = []
    for e in entries[:shown]:
        why = "" if e["reason"] == "unsupported" else f", {e['reason']}"
        names.append(f"{e['name']} ({e['module']}{why}, {e['count']:,})")
    more = f", … {len(entries) - shown} more (manifest float_weights)" if len(entries) > shown else ""
    n = len(entries)
    tensors = f"{n} tensors ({total:,} weights) stay" if n > 1 else f"1 tensor ({total:,} weights) stays"
    return f"warning: {tensors} float at 32 bits: {', '.join(names)}{more}"
