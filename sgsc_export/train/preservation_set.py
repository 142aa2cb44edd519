"""The preservation step of ``compress``: choose the set with the task's selector (or take the user's fixed
set), the samples it names, and its entry in the manifest.

The set is kept as indices into the training split (``-1``: a fixed set from ``--preservation-file``), their
labels, the per-sample scores and the criterion of each member; a checkpoint stores exactly this.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import nn

from sgsc_export.artifact.format import preservation_sha256
from sgsc_export.config import CompressConfig
from sgsc_export.preservation.images import CRITERIA, PreservationSetSelector
from sgsc_export.tasks import Task

__all__ = ["criteria_names", "preservation_entry", "preservation_samples", "select_preservation"]


def criteria_names(task: Task) -> tuple[str, ...]:
    """The names of the criteria a member of the set may have, by index (a language model's fixed set from a
    file is criterion ``"file"``)."""
    if task.name == "language_model":
        from sgsc_export.preservation.text import CRITERIA as TEXT_CRITERIA

        return (*TEXT_CRITERIA, "file")
    return CRITERIA


def select_preservation(model: nn.Module, data: Any, config: CompressConfig,
                        task: Task) -> dict[str, np.ndarray]:
    """The preservation set as indices into the training split (or -1: a fixed set from a file), its labels,
    per-sample scores and criterion of each member."""
    if task.name == "language_model":
        from sgsc_export.preservation.text import TextPreservationSelector

        if data.x_preservation is not None:
            n = len(data.x_preservation)
            return {"indices": np.full(n, -1, np.int64), "labels": data.y_preservation,
                    "scores": np.zeros((n, 3), np.float32), "criteria": np.full(n, 3, np.int8)}
        selector = TextPreservationSelector
    else:
        selector = PreservationSetSelector
    sel = selector(config.preservation_size, config.preservation_budget,
                   random_state=config.seed).fit(model, (data.x_train, data.y_train))
    return {"indices": sel.selected_indices_, "labels": sel.labels(data.y_train),
            "scores": sel.scores_, "criteria": sel.criteria_}


def preservation_samples(data: Any, pres: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The inputs and labels of the set ``pres`` names."""
    if getattr(data, "x_preservation", None) is not None and len(pres["indices"]) and pres["indices"][0] < 0:
        return data.x_preservation, data.y_preservation
    return data.x_train[pres["indices"]], data.y_train[pres["indices"]]


def preservation_entry(pres: dict[str, np.ndarray], x_pres: np.ndarray, y_pres: np.ndarray,
                       task: Task) -> dict[str, Any]:
    """The manifest's ``preservation`` object: size, indices, SHA-256 of the samples, criteria counts."""
    names = criteria_names(task)
    return {"size": len(pres["indices"]), "indices": pres["indices"].tolist(),
            "sha256": preservation_sha256(x_pres, y_pres),
            "criteria_counts": np.bincount(pres["criteria"], minlength=len(names)).tolist(),
            "criteria": list(names)}
