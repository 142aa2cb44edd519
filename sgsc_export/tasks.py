r"""What a model predicts, and how its predictions are scored: the one place that knows the task.

* ``classification`` — logits ``[N, K]``, labels ``[N]``; loss is the cross-entropy, the metric top-1
  accuracy.
* ``language_model`` — next-token logits ``[N, T, V]``, targets ``[N, T]`` with ``-1`` on padding; loss is the
  mean cross-entropy over real tokens (nats), perplexity :math:`\exp(\text{loss})`, and next-token accuracy
  the share of real tokens whose arg-max is the target.

Everything else (training loop, objective, manifest metrics) asks the task instead of branching on it. The
``accuracy`` of a language model is its next-token accuracy, so the restore mechanism and the validation
gate's accuracy-drop check work unchanged.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["CLASSIFICATION", "LANGUAGE_MODEL", "PAD", "Task", "get_task"]

PAD = -1  # target of a padding position in a language model's sequences


class Task:
    """Classification: the behaviour the toolchain had before tasks existed, kept op for op."""

    name = "classification"
    # a sample's logits do not depend on the batch it is in (``trim`` never reshapes a batch), so a frozen
    # model's logits can be computed once per sample and indexed (the distillation teacher's, in
    # ``train.compress_loop``)
    per_sample_logits = True

    def flatten(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits as ``[samples, classes]`` (identity here)."""
        return logits

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, y)

    def trim(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A training batch without columns that only pad (identity here)."""
        return x, y

    def batch_accuracy(self, logits: torch.Tensor, y: torch.Tensor) -> float:
        return float((logits.argmax(1) == y).float().mean())

    def accuracy(self, logits: np.ndarray, y: np.ndarray) -> float:
        return float((logits.argmax(1) == y).mean()) if len(y) else float("nan")

    def metrics(self, logits: np.ndarray, y: np.ndarray, prefix: str) -> dict[str, float]:
        return {f"{prefix}_accuracy": self.accuracy(logits, y)}


class LanguageModelTask(Task):
    """Next-token prediction over sequences padded with ``PAD`` targets."""

    name = "language_model"
    per_sample_logits = False  # ``trim`` cuts each batch to its longest name

    def flatten(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.reshape(-1, logits.shape[-1])

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.flatten(logits), y.reshape(-1), ignore_index=PAD)

    def trim(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Drop the trailing positions where every target is padding: attention is causal, so the real
        positions' logits are unchanged, and a batch of short names costs half the compute."""
        real = (y != PAD).any(0)
        t = int(real.nonzero().max()) + 1 if bool(real.any()) else 1
        return x[:, :t], y[:, :t]

    def batch_accuracy(self, logits: torch.Tensor, y: torch.Tensor) -> float:
        real = y != PAD
        return float((logits.argmax(-1) == y)[real].float().mean())

    def accuracy(self, logits: np.ndarray, y: np.ndarray) -> float:
        real = y != PAD
        return float((logits.argmax(-1) == y)[real].mean()) if real.any() else float("nan")

    @staticmethod
    def token_losses(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Cross-entropy (nats) of every position, 0 where the target is padding; float64 ``[N, T]``."""
        z = logits.astype(np.float64)
        z = z - z.max(-1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
        safe = np.where(y == PAD, 0, y)
        nll = -np.take_along_axis(logp, safe[..., None], -1)[..., 0]
        return np.where(y == PAD, 0.0, nll)

    def mean_loss(self, logits: np.ndarray, y: np.ndarray) -> float:
        n = int((y != PAD).sum())
        return float(self.token_losses(logits, y).sum() / n) if n else float("nan")

    def metrics(self, logits: np.ndarray, y: np.ndarray, prefix: str) -> dict[str, float]:
        loss = self.mean_loss(logits, y)
        perplexity = math.exp(loss) if math.isfinite(loss) else loss
        return {f"{prefix}_loss": loss, f"{prefix}_perplexity": perplexity,
                f"{prefix}_accuracy": self.accuracy(logits, y)}


CLASSIFICATION = Task()
LANGUAGE_MODEL = LanguageModelTask()
_TASKS = {t.name: t for t in (CLASSIFICATION, LANGUAGE_MODEL)}


def get_task(name: str) -> Task:
    from sgsc_export.errors import ConfigError

    if name not in _TASKS:
        raise ConfigError(f"task={name!r} is not supported; choose one of {', '.join(_TASKS)}")
    return _TASKS[name]
