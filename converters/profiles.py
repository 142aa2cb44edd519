"""The three export profiles, each an ordered list of passes (see ``converters.passes``).

Running a profile is calling its passes in order; each call checks the pass's ``requires`` and ``ensures``.
Every profile starts by giving each direction of a GRU/LSTM its own weight initializers
(``unstack_directions``) and locating every quantised weight (``locate_weights``).

* ``portable`` — each layer in the smallest ONNX container for its widest channel (INT2 / INT4 / INT8).
* ``compact``  — exact per-channel widths in one uint8 blob, unpacked in the graph (folded by onnxruntime).
* ``ort-int8`` — INT8 weights plus calibrated 8-bit activation QDQ where it keeps the gate on held data
  (``converters.passes.qdq_select``), for onnxruntime's integer CPU kernels. A GRU/LSTM node has none: it
  runs in float on its dequantised INT8 weights.
"""

from __future__ import annotations

from dataclasses import dataclass

from converters import PROFILE_NAMES
from converters import passes as P
from sgsc_export.errors import ExportError

__all__ = ["PROFILES", "Profile", "get_profile"]


@dataclass(frozen=True)
class Profile:
    name: str
    passes: tuple[P.Pass, ...]
    needs_calibration: bool = False

    def __post_init__(self) -> None:
        for step in self.passes:
            if not isinstance(step, P.Pass):  # a bare function would run without its checks
                raise TypeError(f"profile {self.name!r}: {step!r} is not a converters.passes.Pass")

    def run(self, ctx: P.ExportContext) -> None:
        """Run every pass on ``ctx`` in order (each checks its own pre- and postcondition)."""
        for step in self.passes:
            step(ctx)


_HEAD = (P.unstack_directions, P.locate_weights)
_TAIL = (P.remove_unused, P.check_opset)

PROFILES: dict[str, Profile] = {
    "portable": Profile(
        "portable", (*_HEAD, P.weights_to_dq, *_TAIL, P.add_metadata, P.check_model)
    ),
    "compact": Profile(
        "compact", (*_HEAD, P.weights_to_packed, *_TAIL, P.add_metadata, P.check_model)
    ),
    "ort-int8": Profile(
        "ort-int8",
        (
            *_HEAD,
            P.weights_to_int8,
            P.activation_qdq,
            *_TAIL,
            P.record_kernels,
            P.add_metadata,
            P.check_model,
        ),
        needs_calibration=True,
    ),
}
assert tuple(PROFILES) == PROFILE_NAMES, "converters.PROFILE_NAMES lists the profiles defined here"


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ExportError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}") from None
