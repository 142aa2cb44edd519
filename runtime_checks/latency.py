"""Latency: p50 and p90 wall time of ``session.run`` at fixed batch sizes, after warm-up, at a fixed thread
count.

Inputs are the first ``batch`` samples of the test split (repeated when the split is smaller), so the numbers
are of real data and reproducible. The thread count is the session's ``intra_op_num_threads``, reported beside
them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import onnxruntime as ort

from sgsc_export.errors import ValidationError

__all__ = ["LatencyConfig", "LatencyResult", "measure_latency"]


@dataclass(frozen=True)
class LatencyConfig:
    """What to time: batch sizes, warm-up runs, timed runs per batch size."""

    batch_sizes: tuple[int, ...] = (1, 64)
    warmup: int = 5
    runs: int = 30

    def __post_init__(self) -> None:
        if not self.batch_sizes or any(b < 1 for b in self.batch_sizes):
            raise ValidationError(f"batch_sizes must be positive integers, got {self.batch_sizes}")
        if self.warmup < 0 or self.runs < 1:
            raise ValidationError(f"warmup must be >= 0 and runs >= 1, got {self.warmup} and {self.runs}")


@dataclass
class LatencyResult:
    provider: str
    opt_level: str
    threads: int
    warmup: int
    runs: int
    ms: dict[int, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        out: dict = {"opt_level": self.opt_level, "threads": self.threads, "warmup": self.warmup,
                     "runs": self.runs}
        for batch, stats in self.ms.items():
            out[f"batch_{batch}"] = stats
        return out


def _batch(x: np.ndarray, size: int) -> np.ndarray:
    reps = -(-size // len(x))
    return (np.ascontiguousarray(np.concatenate([x] * reps)[:size]) if reps > 1
            else np.ascontiguousarray(x[:size]))


def measure_latency(session: ort.InferenceSession, x: np.ndarray, provider: str, opt_level: str, threads: int,
                    config: LatencyConfig = LatencyConfig(), batch_sizes: Sequence[int] | None = None
                    ) -> LatencyResult:
    """Time ``session`` on batches of ``x``; p50/p90/mean in milliseconds per batch size."""
    name = session.get_inputs()[0].name
    result = LatencyResult(provider, opt_level, threads, config.warmup, config.runs)
    for size in batch_sizes or config.batch_sizes:
        feed = {name: _batch(x, size)}
        for _ in range(config.warmup):
            session.run(None, feed)
        times = np.empty(config.runs)
        for i in range(config.runs):
            start = time.perf_counter()
            session.run(None, feed)
            times[i] = (time.perf_counter() - start) * 1e3
        result.ms[size] = {"p50": float(np.percentile(times, 50)), "p90": float(np.percentile(times, 90)),
                           "mean": float(times.mean())}
    return result
