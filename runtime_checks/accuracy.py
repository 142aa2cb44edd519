"""Task metrics of one split at one provider and optimisation level.

The task comes from the model's metadata (``sgsc.task``), dispatched through :data:`TASK_EVALUATORS`:
``classification`` (accuracy plus parity with the reference) and ``language_model``
(:mod:`runtime_checks.language_model`: a :class:`SplitResult` whose ``metrics`` hold ``loss``, ``perplexity``
and ``next_token_agreement``; the gate reads ``SplitResult.metrics`` by name).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from runtime_checks.parity import ParityResult, compare_logits
from sgsc_export.errors import ValidationError

__all__ = ["TASK_EVALUATORS", "SplitResult", "evaluate_classification", "evaluate_split", "worst_of"]


@dataclass
class SplitResult:
    """One split (``test`` / ``preservation``) of one run: size, task metrics and parity with the
    reference."""

    split: str
    n: int
    task: str = "classification"
    accuracy: float | None = None
    parity: ParityResult | None = None
    metrics: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        out: dict = {"n": self.n, "accuracy": self.accuracy}
        parity = self.parity.to_dict() if self.parity else {
            "agreement": None, "flipped": [], "max_abs_logit_diff": None, "mean_abs_logit_diff": None,
            "reference": None}
        out.update(parity)
        out.update(self.metrics)
        return out


def evaluate_classification(split: str, logits: np.ndarray, labels: np.ndarray, reference: np.ndarray | None,
                            reference_name: str) -> SplitResult:
    """Top-1 accuracy against the labels, and parity with the reference logits when there are any."""
    if logits.ndim != 2:
        raise ValidationError(f"{split}: classification expects [N, classes] logits, got "
                              f"shape {logits.shape}")
    accuracy = float(np.mean(logits.argmax(axis=1) == labels)) if len(labels) else None
    parity = compare_logits(logits, reference, reference_name) if reference is not None else None
    return SplitResult(split, len(labels), "classification", accuracy, parity)


Evaluator = Callable[[str, np.ndarray, np.ndarray, "np.ndarray | None", str], SplitResult]

# it needs SplitResult, defined above
from runtime_checks.language_model import evaluate_language_model  # noqa: E402

TASK_EVALUATORS: dict[str, Evaluator] = {"classification": evaluate_classification,
                                         "language_model": evaluate_language_model}


def evaluate_split(task: str, split: str, logits: np.ndarray, labels: np.ndarray,
                   reference: np.ndarray | None,
                   reference_name: str) -> SplitResult:
    """Dispatch on the task; an unsupported task is an error (the validation cannot judge it). An empty split
    (a user's npz without ``preservation_indices``) has nothing to evaluate: ``n = 0``, and its checks say
    so."""
    evaluator = TASK_EVALUATORS.get(task)
    if evaluator is None:
        raise ValidationError(f"task {task!r} (model metadata sgsc.task) is not supported by runtime_checks "
                              f"yet; supported: {', '.join(TASK_EVALUATORS)}")
    if len(labels) == 0:
        return SplitResult(split, 0, task)
    return evaluator(split, logits, labels, reference, reference_name)


def worst_of(results: list[SplitResult]) -> SplitResult | None:
    """The worst case over optimisation levels: lowest accuracy and agreement, every flipped sample, largest
    |Δlogit|. This is the per-provider summary of the report."""
    if not results:
        return None
    first = results[0]
    accs = [r.accuracy for r in results if r.accuracy is not None]
    parities = [r.parity for r in results if r.parity is not None]
    parity = None
    if parities:
        parity = ParityResult(
            agreement=min(p.agreement for p in parities),
            flipped=sorted(set().union(*(p.flipped for p in parities))),
            max_abs_logit_diff=max(p.max_abs_logit_diff for p in parities),
            mean_abs_logit_diff=max(p.mean_abs_logit_diff for p in parities),
            reference=parities[0].reference)
    metrics = {}
    for key in first.metrics:  # the worst value of each task metric (none for classification)
        values = [r.metrics[key] for r in results if key in r.metrics]
        worst = max if key in ("loss", "perplexity", "loss_diff") else min
        metrics[key] = worst(values, key=abs) if key == "loss_diff" else worst(values)
    return SplitResult(first.split, first.n, first.task, min(accs) if accs else None, parity, metrics)
