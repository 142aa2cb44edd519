"""Quantised twins of the modules whose forward reads several weight tensors: ``nn.GRU``, ``nn.LSTM`` and
``nn.MultiheadAttention``.

Each weight tensor of such a module moves into a :class:`QWeight` child registered under the tensor's own
name, so ``rnn.weight_ih_l0`` or ``attn.in_proj_weight`` is one quantised layer — in the size term, the loop,
the checkpoints (``rnn.weight_ih_l0.weight``, ``.b``, ``.e``) and the artifact's manifest, whose layer of that
name has ``kind`` ``GRU``, ``LSTM`` or ``MultiheadAttention``. Every row of a tensor is a channel with its own
bit-depth ``b`` and exponent ``e`` (q(w, b, e) of :mod:`sgsc_export.method.core`):

* GRU / LSTM: ``weight_ih_l{k}[_reverse]`` ``[G·H, K]`` and ``weight_hh_l{k}[_reverse]`` ``[G·H, H]``, whose
  rows are one gate of one hidden unit (torch's gate order, G = 3: r, z, n; G = 4: i, f, g, o). A zero-bit row
  adds exactly 0 to its gate's pre-activation; the biases are *not* masked (a gate whose weights are all zero
  still opens by σ(bias), so a hidden unit is not removable by its rows alone), and zero-bit rows stay in
  place as masked rows: recurrent layers are never physically shrunk. An LSTM with ``proj_size`` > 0 has no
  twin (its ``weight_hr`` has no ONNX LSTM equivalent) and stays float.
* ``nn.MultiheadAttention``: ``in_proj_weight`` ``[3E, E]`` (rows 0…E−1 query, E…2E−1 key, 2E…3E−1 value), or
  ``q_proj_weight``, ``k_proj_weight``, ``v_proj_weight`` when ``kdim``/``vdim`` differ from ``embed_dim``. A
  zero-bit row also has its ``in_proj_bias`` entry masked to 0, so it outputs exactly 0, as a Linear
  projection's channel does; which heads that makes removable is :mod:`sgsc_export.method.heads`'s. The
  ``out_proj`` child is a Linear twin of its own (:mod:`sgsc_export.method.nn`).

The float masters stay leaves (the module deep-copies, pickles and moves with ``.to()`` as before); only for
the duration of a forward pass do the quantised tensors stand in for them: a GRU/LSTM twin hands them to
``RNNBase.forward`` through ``_flat_weights`` (it never cuDNN-flattens them: they are recomputed every call),
the attention twin puts them in its ``_parameters`` under the names ``F.multi_head_attention_forward`` reads.
"""

from __future__ import annotations

import torch
from torch import nn

from sgsc_export.method._mixin import _QMixin

__all__ = ["PACKED", "PackedTwin", "QGRU", "QLSTM", "QMultiheadAttention", "QWeight", "packed_supported"]


class QWeight(_QMixin, nn.Module):
    """One weight tensor of a packed module (``weight``, the float master) whose rows are channels."""

    bias = None  # the module's biases stay with the module (the attention twin masks its own)

    def __init__(self, weight: nn.Parameter, kind: str, init_bits: float) -> None:
        super().__init__()
        self.weight = weight
        self.kind = kind
        self._init_q(init_bits)

    def extra_repr(self) -> str:
        return f"{self.kind}, rows={self.weight.shape[0]}, cols={self.weight.shape[1]}"

    def forward(self, *args: object) -> torch.Tensor:
        raise TypeError(f"a {self.kind} weight is read by its module's forward, it is not called")


class PackedTwin:
    """What the twins share: the names of their quantised tensors, which move into ``QWeight`` children, and
    the float module's parameter order (``freeze`` rebuilds it)."""

    kind = ""
    _parameters: dict[str, torch.Tensor | None]
    _modules: dict[str, nn.Module | None]

    def weight_names(self) -> list[str]:
        raise NotImplementedError

    def _init_q(self, init_bits: float) -> None:
        self.float_order = list(self._parameters)
        for name in self.weight_names():
            self._modules[name] = QWeight(self._parameters.pop(name), self.kind, init_bits)

    def qweights(self) -> dict[str, QWeight]:
        """Tensor name → its quantised child, in the module's parameter order."""
        return {n: self._modules[n] for n in self.weight_names()}


class _QRNN(PackedTwin):
    _flat_weights_names: list[str]
    _flat_weights: list[torch.Tensor | None]

    def weight_names(self) -> list[str]:
        return [n for n in self._flat_weights_names if n.startswith("weight_")]

    def _flat(self, quantised: bool) -> list[torch.Tensor | None]:
        q = self.qweights()
        return [(q[n].qweight() if quantised else q[n].weight) if n in q else getattr(self, n)
                for n in self._flat_weights_names]

    def _init_flat_weights(self) -> None:  # RNNBase calls it from .to() / ._apply: the masters, unflattened
        self._flat_weights = self._flat(False)
        self._flat_weight_refs = []

    def _update_flat_weights(self) -> None:  # RNNBase.forward calls it first: the quantised tensors
        self._flat_weights = self._flat(True)

    def forward(self, *args, **kwargs):
        try:
            return super().forward(*args, **kwargs)
        finally:
            self._flat_weights = self._flat(False)  # leaves again (a non-leaf tensor cannot be deep-copied)


class QGRU(_QRNN, nn.GRU):
    kind = "GRU"


class QLSTM(_QRNN, nn.LSTM):
    kind = "LSTM"


class QMultiheadAttention(PackedTwin, nn.MultiheadAttention):
    kind = "MultiheadAttention"

    def weight_names(self) -> list[str]:
        if self._qkv_same_embed_dim:
            return ["in_proj_weight"]
        return ["q_proj_weight", "k_proj_weight", "v_proj_weight"]

    def row_alive(self) -> torch.Tensor:
        """Bool ``[3E]``: query, key and value rows above zero bits."""
        return torch.cat([w.channel_alive() for w in self.qweights().values()])

    def qbias(self) -> torch.Tensor | None:
        """``in_proj_bias`` with the entries of zero-bit rows masked to 0."""
        bias = self._parameters.get("in_proj_bias")
        return None if bias is None else bias * self.row_alive().to(bias.dtype)

    def forward(self, *args, **kwargs):
        params = self._parameters
        bias = params.get("in_proj_bias")
        masked = self.qbias()
        for name, w in self.qweights().items():
            params[name] = w.qweight()
        if bias is not None:
            params["in_proj_bias"] = masked  # an existing key: the parameter order does not change
        try:
            return super().forward(*args, **kwargs)
        finally:
            for name in self.weight_names():
                params.pop(name)
            if bias is not None:
                params["in_proj_bias"] = bias


PACKED: dict[type[nn.Module], type[nn.Module]] = {nn.GRU: QGRU, nn.LSTM: QLSTM,
                                                  nn.MultiheadAttention: QMultiheadAttention}


def packed_supported(m: nn.Module) -> bool:
    """Whether a GRU/LSTM/MultiheadAttention has a twin: every configuration but an LSTM's ``proj_size``."""
    return not (isinstance(m, nn.LSTM) and m.proj_size > 0)
