"""Which activations of an ``ort-int8`` file are quantised: only those whose rounding keeps the gate.

8-bit activation QDQ buys onnxruntime's integer kernels, and costs accuracy where a tensor's min/max range
is wide for its content (attention scores, a residual stream, a LayerNorm input). A file that fails
``sgsc validate`` where the ``portable`` file passes is worse than no activation QDQ at all, so the choice is
measured, per activation tensor, on held data against the same checks the gate makes. The held data are
every split the artifact has that is not the test split: its validation split (a stand-in for the test
split) *and* its preservation set (training samples, the hard ones first, which the gate checks itself).
On each held split ``s``:

    flip_bound(q, twin) ≤ 1 − min_agreement
    accuracy(q)        ≥ max(floor, accuracy(twin) − ½·(accuracy(twin) − floor)⁺),
                         floor = accuracy(float) − max_accuracy_drop
    perplexity(q)      ≤ min(ceiling, perplexity(twin) + ½·(ceiling − perplexity(twin))⁺),
                         ceiling = perplexity(float) · max_perplexity_ratio           (language models)

(``(·)⁺ = max(·, 0)``; where the twin is already past the gate's bound, q must keep the twin's value.)
``flip_bound`` is the upper end of the Wilson score interval (``z = FLIP_Z``, one-sided ≈ 84 %) of the
rate at which ``q``'s top-1 differs from ``twin``'s over the split's positions: a small split needs a clean
record (at most one flip on 300 samples) and a large one may flip its share. ``q`` is the candidate file,
``twin`` the same file without activation QDQ (weight-only INT8, which computes the PyTorch reference's
function) and ``float`` the float model's logits stored in the artifact. q may spend at most half of the
twin's slack to the gate's accuracy bound on a held split: the other half is the margin for the test split,
which it has never seen (at the full slack, the zoo's ``resnext_dw`` met the bound on its validation split
and lost one test sample too many). Each condition is measured in onnxruntime with optimisations off (the
QDQ arithmetic as written) and at ``all`` (the fused integer kernels, which round their requantisation
differently); all must hold, on every held split.

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
    measured: dict[str, dict[str, Any]]  # split → twin, float, bounds and each level's metrics
    sessions: int
    data: list[SelectionData]
    targets: QDQTargets
    reason: str = ""

    def record(self) -> dict[str, Any]:
        return {
            "split": "+".join(d.split for d in self.data), "n": {d.split: int(len(d.x)) for d in self.data},
            "targets": self.targets.to_dict(),
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
    """The module docstring's bounds: the gate's, or halfway from the twin to them."""
    bounds = {"max_flip_bound": 1.0 - t.min_agreement}
    if "accuracy" in twin:
        bound = twin["accuracy"]
        if float_m is not None and "accuracy" in float_m:
            floor = float_m["accuracy"] - t.max_accuracy_drop / 100.0
            bound = max(floor, twin["accuracy"] - 0.5 * max(twin["accuracy"] - floor, 0.0))
        bounds["min_accuracy"] = min(bound, twin["accuracy"])
    if "perplexity" in twin:
        bound = twin["perplexity"]
        if float_m is not None and "perplexity" in float_m:
            ceiling = float_m["perplexity"] * t.max_perplexity_ratio
            bound = min(ceiling, twin["perplexity"] + 0.5 * max(ceiling - twin["perplexity"], 0.0))
        bounds["max_perplexity"] = max(bound, twin["perplexity"])
    return bounds


def _meets(m: dict[str, float], bounds: dict[str, float]) -> bool:
    return (m["flip_bound"] <= bounds["max_flip_bound"] + 1e-12
            and m.get("accuracy", 1.0) >= bounds.get("min_accuracy", 0.0) - 1e-12
            and m.get("perplexity", 0.0) <= bounds.get("max_perplexity", np.inf) + 1e-12)


def choose(candidates: Sequence[str], build: Callable[[frozenset[str]], onnx.ModelProto],
           data: SelectionData | Sequence[SelectionData], targets: QDQTargets) -> QDQChoice:
    """The largest set of ``candidates`` to quantise (see the module docstring); ``build(enabled)`` is the
    file with QDQ pairs on exactly ``enabled``; ``data`` the held split(s), every one of which must meet the
    bounds (the first ranks the candidates)."""
    candidates = tuple(candidates)
    splits = [data] if isinstance(data, SelectionData) else list(data)
    if not splits:
        raise ValueError("choose needs at least one held split")
    weight_only = build(frozenset())
    refs = [_outputs(weight_only, d.x, "disabled") for d in splits]
    base: dict[str, dict[str, Any]] = {}
    bounds = []
    for d, ref in zip(splits, refs):
        twin = _metrics(ref, ref, d)
        float_m = _metrics(d.float_logits, ref, d) if d.float_logits is not None else None
        bounds.append(_bounds(twin, float_m, targets))
        base[d.split] = {"twin": twin, **({"float": float_m} if float_m else {}), "bounds": bounds[-1]}
    sessions = len(splits)

    def measure(enabled: frozenset[str]) -> tuple[bool, dict[str, dict[str, Any]]]:
        nonlocal sessions
        proto = build(enabled)
        results: dict[str, dict[str, Any]] = {}
        for d, ref, bound in zip(splits, refs, bounds):
            for level in LEVELS:
                sessions += 1
                m = _metrics(_outputs(proto, d.x, level), ref, d)
                results.setdefault(d.split, {})[level] = m
                if not _meets(m, bound):
                    return False, results
        return True, results

    def merged(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        return {name: {**base[name], **results.get(name, {})} for name in base}

    full = frozenset(candidates)
    ok, measured = measure(full) if candidates else (True, {})
    name = "+".join(d.split for d in splits)
    if ok:
        return QDQChoice(full, candidates, (), merged(measured), sessions, splits, targets,
                         "every candidate quantised meets the bounds")

    sub = splits[0].x[:RANK_SAMPLES]
    ref_sub = refs[0][:RANK_SAMPLES].astype(np.float64)
    scores = []
    for cand in candidates:
        out = _outputs(build(frozenset([cand])), sub, "disabled")
        sessions += 1
        scores.append(float(np.mean((out.astype(np.float64) - ref_sub) ** 2)))
    ranking = [candidates[i] for i in sorted(range(len(candidates)), key=lambda i: (-scores[i], i))]

    lo, hi = 0, len(ranking)  # k = lo fails (measured), k = hi is accepted
    best: dict[str, dict[str, Any]] = {}
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
              f"so the file meets the bounds on the {name} split(s)")
    if not enabled:
        reason = f"no activation can be quantised within the bounds on the {name} split(s): weight-only INT8"
    return QDQChoice(enabled, candidates, kept_float, merged(best), sessions, splits, targets, reason)
