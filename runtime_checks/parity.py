"""Parity of a model's logits with a reference: top-1 agreement, the samples that flip, and |Δlogit|."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sgsc_export.errors import ValidationError

__all__ = ["ParityResult", "compare_logits"]


@dataclass
class ParityResult:
    """Top-1 agreement with the reference, the indices (into the split) of samples whose top-1 differs, and
    the largest and mean absolute logit difference. ``reference`` names what was compared against."""

    agreement: float
    flipped: list[int] = field(default_factory=list)
    max_abs_logit_diff: float = 0.0
    mean_abs_logit_diff: float = 0.0
    reference: str = "pytorch"

    def to_dict(self) -> dict:
        return {"agreement": self.agreement, "flipped": list(self.flipped),
                "max_abs_logit_diff": self.max_abs_logit_diff,
                "mean_abs_logit_diff": self.mean_abs_logit_diff,
                "reference": self.reference}


def compare_logits(logits: np.ndarray, reference: np.ndarray,
                   reference_name: str = "pytorch") -> ParityResult:
    """Compare ``[N, C]`` logits with the reference's; an empty split agrees trivially."""
    logits, reference = np.asarray(logits, np.float32), np.asarray(reference, np.float32)
    if logits.shape != reference.shape:
        raise ValidationError(f"model logits have shape {logits.shape} but the reference {reference_name!r} "
                              f"has {reference.shape}; the model and the data do not belong together")
    if len(logits) == 0:
        return ParityResult(1.0, [], 0.0, 0.0, reference_name)
    if not np.all(np.isfinite(logits)):
        bad = np.flatnonzero(~np.isfinite(logits).all(axis=1))
        raise ValidationError(f"model produced non-finite logits for {len(bad)} samples "
                              f"(first: {bad[:5].tolist()})")
    flipped = np.flatnonzero(logits.argmax(axis=1) != reference.argmax(axis=1))
    diff = np.abs(logits - reference)
    return ParityResult(agreement=float(1.0 - len(flipped) / len(logits)), flipped=flipped.tolist(),
                        max_abs_logit_diff=float(diff.max()), mean_abs_logit_diff=float(diff.mean()),
                        reference=reference_name)
