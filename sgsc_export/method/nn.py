"""Quantised twins of Conv1d/Conv2d/Linear/Embedding, and ``prepare_`` that swaps them in place.

A twin is its float layer plus two per-output-channel parameters, ``b`` (bit-depth) and ``e`` (exponent), and
a buffer ``in_alive`` that marks which input slots still read a live channel (set by the pruning planner; it
only changes the size term Q). Its forward pass uses ``q(w, b, e)`` from :mod:`sgsc_export.method.core`; a
channel at zero bits also has its bias masked to exactly zero, so that the channel outputs 0 and can later be
removed without changing the network's output. An embedding's "channels" are its rows (one per token): each
row has its own b and e, and a zero-bit row embeds its token as the zero vector.

A layer is matched by ``isinstance``: a subclass of Conv1d/Conv2d/Linear/Embedding that keeps its base's
``forward`` (``nn.MultiheadAttention.out_proj``, a user's ``class MyConv(nn.Conv2d)`` adding a method) gets a
twin that is also an instance of its own class; one that overrides ``forward`` is left float (its forward may
not use ``weight`` as the base does) and reported. Some modules read a child's ``weight`` and ``bias``
instead of calling it (``nn.MultiheadAttention`` hands ``out_proj.weight`` to
``F.multi_head_attention_forward``); while such a parent runs, its quantised child's ``q(w, b, e)`` and masked
bias stand in for the float master copies (``_READ_DIRECTLY``), so the parent computes exactly what the frozen
model will.

``nn.GRU``, ``nn.LSTM`` and ``nn.MultiheadAttention`` read several weight tensors; their twins
(:mod:`sgsc_export.method.packed`) hold one quantised tensor per weight, rows as channels, and are matched the
same way (a subclass keeping the base's ``forward`` included).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from sgsc_export.config import CompressConfig
from sgsc_export.method._mixin import _QMixin
from sgsc_export.method.packed import PACKED, PackedTwin, QWeight, packed_supported

__all__ = ["QUANTISABLE", "QConv1d", "QConv2d", "QEmbedding", "QLinear", "float_class", "is_quantized",
           "is_twin", "layer_kind", "prepare_", "quantisable_base", "quantized_layers", "twin_class"]


class QConv1d(_QMixin, nn.Conv1d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.qweight(), self.qbias())


class QConv2d(_QMixin, nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.qweight(), self.qbias())


class QLinear(_QMixin, nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.qweight(), self.qbias())


class QEmbedding(_QMixin, nn.Embedding):
    """Per-row quantised embedding: row r (token r) has its own bit-depth and exponent."""

    bias = None  # an embedding has no bias; the mixin's qbias() then returns None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.embedding(x, self.qweight(), self.padding_idx, self.max_norm, self.norm_type,
                           self.scale_grad_by_freq, self.sparse)


QUANTISABLE: dict[type[nn.Module], type[nn.Module]] = {nn.Conv1d: QConv1d, nn.Conv2d: QConv2d,
                                                       nn.Linear: QLinear, nn.Embedding: QEmbedding, **PACKED}


def is_quantized(m: nn.Module) -> bool:
    """Whether ``m`` stores a quantised weight (a layer twin, or one tensor of a GRU/LSTM/attention twin)."""
    return isinstance(m, _QMixin)


def is_twin(m: nn.Module) -> bool:
    """Whether ``m`` was made by ``prepare_`` (a layer twin, or a GRU/LSTM/attention twin)."""
    return isinstance(m, (_QMixin, PackedTwin))


def quantized_layers(model: nn.Module) -> dict[str, _QMixin]:
    """Name → quantised layer, in module order (``rnn.weight_ih_l0`` for a tensor of a GRU twin)."""
    return {n: m for n, m in model.named_modules() if isinstance(m, _QMixin)}


_SUBCLASS_TWINS: dict[type[nn.Module], type[nn.Module]] = {}


def quantisable_base(m: nn.Module) -> type[nn.Module] | None:
    """The Conv1d/Conv2d/Linear/Embedding/GRU/LSTM/MultiheadAttention that ``m`` is an instance of, or None
    (also for a configuration without a twin, ``packed_supported``)."""
    base = next((base for base in QUANTISABLE if isinstance(m, base)), None)
    return base if base is not None and packed_supported(m) else None


def twin_class(m: nn.Module) -> type[nn.Module] | None:
    """The quantised class ``m`` becomes, or None: not a quantisable layer, or a subclass with its own
    ``forward``. A subclass's twin derives from the twin and from the subclass (its methods and isinstance
    hold)."""
    base = quantisable_base(m)
    cls = type(m)
    if base is None or cls.forward is not base.forward:
        return None
    if cls is base:
        return QUANTISABLE[base]
    if cls not in _SUBCLASS_TWINS:
        _SUBCLASS_TWINS[cls] = type(f"Q{cls.__name__}", (QUANTISABLE[base], cls),
                                    {"__module__": __name__, "__qualname__": f"Q{cls.__qualname__}"})
    return _SUBCLASS_TWINS[cls]


def float_class(layer: nn.Module) -> type[nn.Module]:
    """The class a twin was made from (what ``freeze`` turns it back into)."""
    return next(c for c in type(layer).__mro__ if not issubclass(c, (_QMixin, PackedTwin)))


def layer_kind(layer: nn.Module) -> str:
    """``Conv1d``, ``Conv2d``, ``Linear`` or ``Embedding``: the layer's quantisable base, by name; for one
    tensor of a packed twin, the twin's (``GRU``, ``LSTM``, ``MultiheadAttention``)."""
    if isinstance(layer, QWeight):
        return layer.kind
    base = quantisable_base(layer)
    return base.__name__ if base is not None else type(layer).__name__


def _twin(m: nn.Module, cls: type[nn.Module], init_bits: float) -> nn.Module:
    q = cls.__new__(cls)
    q.__dict__ = m.__dict__.copy()  # same parameters, hooks and attributes; no re-initialisation
    q._parameters = dict(m._parameters)
    q._buffers = dict(m._buffers)
    q._modules = dict(m._modules)
    q._init_q(init_bits)
    return q


# parent class → the children whose weight and bias its forward reads directly
_READ_DIRECTLY: dict[type[nn.Module], tuple[str, ...]] = {nn.MultiheadAttention: ("out_proj",)}


def _read_directly(parent: nn.Module) -> list[_QMixin]:
    names = next((v for k, v in _READ_DIRECTLY.items() if isinstance(parent, k)), ())
    return [c for c in (getattr(parent, n, None) for n in names) if isinstance(c, _QMixin)]


def _stand_in(parent: nn.Module, args: tuple) -> None:
    """Forward pre-hook: the quantised tensors replace the children's float masters for this call."""
    for child in _read_directly(parent):
        if "_masters" not in child.__dict__:
            w, b = child.qweight(), child.qbias()
            child.__dict__["_masters"] = (child._parameters["weight"], child._parameters.get("bias"))
            child._parameters["weight"] = w
            if b is not None:
                child._parameters["bias"] = b


def _restore(parent: nn.Module, args: tuple, output: object) -> None:
    """Forward hook (also when the forward raises): the float masters are back."""
    for child in _read_directly(parent):
        masters = child.__dict__.pop("_masters", None)
        if masters is not None:
            child._parameters["weight"] = masters[0]
            if masters[1] is not None:
                child._parameters["bias"] = masters[1]


def _hook_readers_(model: nn.Module) -> None:
    for module in model.modules():
        if _read_directly(module) and _stand_in not in module._forward_pre_hooks.values():
            module.register_forward_pre_hook(_stand_in)
            module.register_forward_hook(_restore, always_call=True)


def prepare_(
    model: nn.Module,
    config: CompressConfig | None = None,
    filter_fn: Callable[[nn.Module, str], bool] | None = None,
) -> list[str]:
    """Swap every Conv1d/Conv2d/Linear/Embedding/GRU/LSTM/MultiheadAttention of ``model`` (subclasses
    included, see the module docstring) for its quantised twin, in place.

    A layer is skipped when its name is in ``config.exclude`` or ``filter_fn(module, name)`` is false. Returns
    the names of the modules that stay float although they hold parameters (unsupported layer types,
    subclasses with their own forward and excluded layers), for the manifest.
    """
    config = config or CompressConfig()
    left_float: list[str] = []
    for name, module in list(model.named_modules()):
        if name == "" or is_twin(module):
            continue
        own_params = any(True for _ in module.parameters(recurse=False))
        cls = twin_class(module)
        if (cls is not None and name not in config.exclude
                and (filter_fn is None or filter_fn(module, name))):
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name)
            setattr(parent, child, _twin(module, cls, config.init_bits))
        elif own_params:
            left_float.append(name)
    _hook_readers_(model)
    return left_float
