"""Task metrics of a language model's split: loss, perplexity, next-token accuracy and agreement.

Logits are ``[N, T, V]`` next-token scores, labels ``[N, T]`` targets with ``-1`` on padding (the artifact's
layout, see ``sgsc_export.datasets.text``). Only real positions count. ``accuracy`` is the next-token accuracy
(so the gate's accuracy-drop check applies unchanged); ``metrics`` hold ``loss`` (mean cross-entropy, nats),
``perplexity`` (exp of it) and, with a reference, ``next_token_agreement`` (share of real positions whose
arg-max equals the reference's), ``reference_loss`` and ``loss_diff``. ``parity.flipped`` lists the
*sequences* with at least one flipped position.
"""

from __future__ import annotations

import math

import numpy as np

from runtime_checks.accuracy import SplitResult
from runtime_checks.parity import compare_logits
from sgsc_export.errors import ValidationError

__all__ = ["PAD", "evaluate_language_model", "mean_loss"]

PAD = -1


def mean_loss(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean cross-entropy (nats) over the real positions, computed in float64."""
    real = labels != PAD
    if not real.any():
        return float("nan")
    z = logits[real].astype(np.float64)
    z = z - z.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    return float(-np.take_along_axis(logp, labels[real][:, None], -1).mean())


def evaluate_language_model(split: str, logits: np.ndarray, labels: np.ndarray, reference: np.ndarray | None,
                            reference_name: str) -> SplitResult:
    if logits.ndim != 3 or labels.ndim != 2 or logits.shape[:2] != labels.shape:
        raise ValidationError(f"{split}: a language model needs [N, T, vocab] logits and [N, T] targets, got "
                              f"{logits.shape} and {labels.shape}")
    real = labels != PAD
    n_tokens = int(real.sum())
    accuracy = float((logits.argmax(-1) == labels)[real].mean()) if n_tokens else None
    loss = mean_loss(logits, labels)
    metrics = {"tokens": float(n_tokens), "loss": loss,
               "perplexity": math.exp(loss) if math.isfinite(loss) else loss}
    parity = None
    if reference is not None:
        if reference.shape != logits.shape:
            raise ValidationError(f"model logits have shape {logits.shape} but the "
                                  f"reference {reference_name!r} has {reference.shape}; the model and the "
                                  "data do not belong together")
        parity = compare_logits(logits[real], reference[real], reference_name)
        rows = np.nonzero(real)[0]
        parity.flipped = sorted({int(rows[i]) for i in parity.flipped})
        ref_loss = mean_loss(reference, labels)
        metrics.update({"next_token_agreement": parity.agreement, "reference_loss": ref_loss,
                        "loss_diff": loss - ref_loss})
    return SplitResult(split, len(labels), "language_model", accuracy, parity, metrics)
