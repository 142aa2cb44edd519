"""Which activations of an ``ort-int8`` file are quantised: only those whose rounding keeps the gate.

8-bit activation QDQ buys onnxruntime's integer kernels, and costs accuracy where a tensor's min/max range
is wide for its content (attention scores, a residual stream, a LayerNorm input). A file that fails
``sgsc validate`` where the ``portable`` file passes is worse than no activation QDQ at all, so the choice is
measured, per activation tensor, on held data (the artifact's validation split when it has one, else its
preservation set: training samples, the hard ones first, never the test split), against the same checks the
gate makes:

    flip_bound(q, twin) ≤ 1 − min_agreement
    accuracy(q)        ≥ min(accuracy(twin), accuracy(float) − max_accuracy_drop)
    perplexity(q)      ≤ max(perplexity(twin), perplexity(float) · max_perplexity_ratio)   (language models)

where ``flip_bound`` is the upper end of the Wilson score interval (``z = FLIP_Z``, one-sided ≈ 84 %) of the
rate at which ``q``'s top-1 differs from ``twin``'s, over the held positions: the held split is small
(the preservation set is a tenth of the training split at most), and a file chosen to pass on it must pass on
the test split the gate sees too, so a small split needs a clean record (zero flips on 143 samples) and a
large one may flip its share. ``q`` is the candidate file, ``twin`` the same file without activation QDQ
(weight-only INT8, which computes the PyTorch reference's function) and ``float`` the float model's logits
stored in the artifact. The right-hand sides are the gate's own bounds, loosened only to what the
weight-only file itself reaches, so ``ort-int8`` passes wherever the ``portable`` file passes. Each
condition is measured in onnxruntime with optimisations off (the QDQ arithmetic as written) and at ``all``
(the fused integer kernels, which round their requantisation differently); both must hold.

The search (after NNCF's accuracy-aware quantisation, which reverts the quantisers that hurt most first):

1. every candidate quantised; if that meets the conditions, done (no measurement changes the file);
2. else rank the candidates by the mean squared logit error each causes *alone* (one session per
   candidate, on at most ``RANK_SAMPLES`` samples), the worst first;
3. keep the first ``k`` of the ranking in float, with the smallest ``k`` that meets the conditions, found by
   bisection (the conditions are close to monotone in ``k``; ``k = N`` is the weight-only file, which meets
   them by definition). Every ``k`` that is accepted was measured.

All of it runs with one thread, so the same artifact gives the same choice and the same bytes. What was
chosen and what it measured are written to the file's metadata (``sgsc.activation_qdq``) and, per layer, to
the export table.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from converters.passes._ort import LEVELS, run_graph

__all__ = ["FLIP_Z", "RANK_SAMPLES", "flip_bound", "QDQChoice", "QDQTargets", "SelectionData", "choose"]

RANK_SAMPLES = 256
FLIP_Z = 1.0


def flip_bound(flips: int, n: int, z: float = FLIP_Z) -> float:
    """The upper end of the Wilson score interval of a rate seen as ``flips`` of ``n``."""
    if n <= 0:
        return 1.0
    p, z2 = flips / n, z * z
    centre = p + z2 / (2 * n)
    spread = z * np.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return float((centre + spread) / (1 + z2 / n))


@dataclass(frozen=True)
class QDQTargets:
    """What the chosen file must keep on the selection split; the defaults are ``sgsc validate``'s gate
    (``runtime_checks.gate.Thresholds``; a test keeps them equal)."""

    min_agreement: float = 0.99
    max_accuracy_drop: float = 1.0  # percentage points against the float model
    max_perplexity_ratio: float = 1.05

    def to_dict(self) -> dict[str, float]:
        return {"min_agreement": self.min_agreement, "max_accuracy_drop": self.max_accuracy_drop,
                "max_perplexity_ratio": self.max_perplexity_ratio}


@dataclass(frozen=True)
class SelectionData:
    """The held samples the choice is measured on: inputs, labels (``-1``: a language model's padding) and
    the float model's logits, each optional but ``x``."""

    x: np.ndarray
    split: str
    y: np.ndarray | None = None
    float_logits: np.ndarray | None = None
    language_model: bool = False


@dataclass
class QDQChoice:
    enabled: frozenset[str]
    candidates: tuple[str, ...]
    kept_float: tuple[str, ...]
    measured: dict[str, dict[str, float]]
    sessions: int
    data: SelectionData
    targets: QDQTargets
    reason: str = ""

    def record(self) -> dict[str, Any]:
        return {
            "split": self.data.split, "n": int(len(self.data.x)), "targets": self.targets.to_dict(),
            "candidates": len(self.candidates), "quantised": len(self.enabled),
            "kept_float": list(self.kept_float), "measured": self.measured, "sessions": self.sessions,
            "reason": self.reason,
        }


def _outputs(proto: onnx.ModelProto, x: np.ndarray, level: str) -> np.ndarray:
    return np.concatenate([outs[0] for outs in run_graph(proto, x, level=level)], axis=0)


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _metrics(out: np.ndarray, ref: np.ndarray, data: SelectionData) -> dict[str, float]:
    """Agreement with ``ref`` and, where labels exist, accuracy (and perplexity for a language model), over
    the real positions."""
    real = np.ones(out.shape[:-1], dtype=bool) if data.y is None else np.asarray(data.y) != -1
    pred = out.argmax(-1)
    n, flips = int(real.sum()), int((pred != ref.argmax(-1))[real].sum())
    m = {"agreement": 1.0 - flips / n if n else 1.0, "flips": flips, "n": n,
         "flip_bound": flip_bound(flips, n)}
    if data.y is not None and real.any():
        y = np.asarray(data.y)
        m["accuracy"] = float((pred == y)[real].mean())
        if data.language_model:
            nll = -np.take_along_axis(_log_softmax(out), np.where(real, y, 0)[..., None], -1)[..., 0]
            m["perplexity"] = float(np.exp(nll[real].mean()))
    return m


def _bounds(twin: dict[str, float], float_m: dict[str, float] | None, t: QDQTargets) -> dict[str, float]:
    bounds = {"max_flip_bound": 1.0 - t.min_agreement}
    if "accuracy" in twin:
        floor = twin["accuracy"]
        if float_m is not None and "accuracy" in float_m:
            floor = min(floor, float_m["accuracy"] - t.max_accuracy_drop / 100.0)
        bounds["min_accuracy"] = floor
    if "perplexity" in twin:
        ceiling = twin["perplexity"]
        if float_m is not None and "perplexity" in float_m:
            ceiling = max(ceiling, float_m["perplexity"] * t.max_perplexity_ratio)
        bounds["max_perplexity"] = ceiling
    return bounds


def _meets(m: dict[str, float], bounds: dict[str, float]) -> bool:
    return (m["flip_bound"] <= bounds["max_flip_bound"] + 1e-12
            and m.get("accuracy", 1.0) >= bounds.get("min_accuracy", 0.0) - 1e-12
            and m.get("perplexity", 0.0) <= bounds.get("max_perplexity", np.inf) + 1e-12)


def choose(candidates: Sequence[str], build: Callable[[frozenset[str]], onnx.ModelProto],
           data: SelectionData, targets: QDQTargets) -> QDQChoice:
    """The largest set of ``candidates`` to quantise (see the module docstring); ``build(enabled)`` is the
    file with QDQ pairs on exactly ``enabled``."""
    candidates = tuple(candidates)
    x = data.x
    ref = _outputs(build(frozenset()), x, "disabled")
    twin = _metrics(ref, ref, data)
    float_m = _metrics(data.float_logits, ref, data) if data.float_logits is not None else None
    bounds = _bounds(twin, float_m, targets)
    sessions = 1

    def measure(enabled: frozenset[str]) -> tuple[bool, dict[str, dict[str, float]]]:
        nonlocal sessions
        proto = build(enabled)
        results = {}
        for level in LEVELS:
            sessions += 1
            results[level] = _metrics(_outputs(proto, x, level), ref, data)
            if not _meets(results[level], bounds):
                return False, results
        return True, results

    full = frozenset(candidates)
    ok, measured = measure(full) if candidates else (True, {})
    base = {"twin": twin, **({"float": float_m} if float_m else {}), "bounds": bounds}
    if ok:
        return QDQChoice(full, candidates, (), {**base, **measured}, sessions, data, targets,
                         "every candidate quantised meets the bounds")

    sub = x[:RANK_SAMPLES]
    ref_sub = ref[:RANK_SAMPLES].astype(np.float64)
    scores = []
    for name in candidates:
        out = _outputs(build(frozenset([name])), sub, "disabled")
        sessions += 1
        scores.append(float(np.mean((out.astype(np.float64) - ref_sub) ** 2)))
    ranking = [candidates[i] for i in sorted(range(len(candidates)), key=lambda i: (-scores[i], i))]

    lo, hi = 0, len(ranking)  # k = lo fails (measured), k = hi is accepted
    best: dict[str, dict[str, float]] = {}
    while hi - lo > 1:
        mid = (lo + hi) // 2
        ok, result = measure(full - frozenset(ranking[:mid]))
        if ok:
            hi, best = mid, result
        else:
            lo = mid
    kept_float = tuple(ranking[:hi])
    enabled = full - frozenset(kept_float)
    reason = (f"{len(kept_float)} of {len(candidates)} activations kept in float, the most damaging first, "
              f"so the file meets the bounds on the {data.split} split")
    if not enabled:
        reason = (f"no activation can be quantised within the bounds on the {data.split} split: "
                  "weight-only INT8")
    return QDQChoice(enabled, candidates, kept_float, {**base, **best}, sessions, data, targets, reason)
