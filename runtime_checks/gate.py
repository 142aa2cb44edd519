"""The gate: thresholds → a list of checks, each passed / failed / skipped with its reason → one status.

Status is ``error`` if anything could not run, else ``failed`` if any check failed, else ``passed``. It fails
closed: a run in which no check was evaluated at all is an ``error``, never a pass. ``verdict`` is that rule,
the one copy: the report, the pipeline's result, its summary and the HTML/Markdown report all call it. Imports
neither numpy nor onnxruntime (``SplitResult`` is a type hint only), so ``ValidateConfig`` and the CLI's
``--help`` can read ``Thresholds``' fields cheaply.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from sgsc_export._fields import Range, check_ranges, option

if TYPE_CHECKING:
    from runtime_checks.accuracy import SplitResult

__all__ = ["DEFAULT_PERPLEXITY_RATIO", "EXIT_CODES", "CheckResult", "LogitTolerance", "Thresholds", "decide",
           "exit_code", "layer_check", "logit_parity_check", "perplexity_check", "split_checks", "verdict"]

_LARGE = 1e30  # a finite bound: infinity (and NaN) is never a threshold
EXIT_CODES = {"passed": 0, "failed": 1, "error": 2}


@dataclass(frozen=True)
class Thresholds:
    """What the gate allows; each field's range is its metadata, checked by ``check_ranges`` (one place for
    the gate, ``ValidateConfig`` and the pipeline's config). ``None``: ``max_perplexity_ratio`` is the default
    (1.05, language models only), ``max_logit_diff`` is derived from the file's profile."""

    max_accuracy_drop: float = option(1.0,
                                      "Largest accuracy drop against the float model, percentage points, "
                                      "per split.", Range(0.0, 100.0))
    min_agreement: float = option(0.99, "Smallest top-1 agreement with the PyTorch reference.",
                                  Range(0.0, 1.0))
    max_layer_error_steps: float = option(1.0,
                                          "With --layers: largest per-layer error in quantisation steps.",
                                          Range(0.0, _LARGE))
    max_perplexity_ratio: float | None = option(
        None, "Language models: largest perplexity over the float model's, per split (default 1.05).",
        Range(1.0, _LARGE))
    max_logit_diff: float | None = option(
        None, "Largest |Δlogit| against the PyTorch reference (default: derived from the file's profile, "
        "see docs/REPORT.md).", Range(0.0, _LARGE))

    def __post_init__(self) -> None:
        check_ranges(self)

    def to_dict(self) -> dict:
        """The thresholds; ``max_perplexity_ratio`` (language models only) and ``max_logit_diff`` (else
        derived per check) only when set."""
        optional = ("max_perplexity_ratio", "max_logit_diff")
        return {k: v for k, v in asdict(self).items() if k not in optional or v is not None}


DEFAULT_PERPLEXITY_RATIO = 1.05


@dataclass(frozen=True)
class CheckResult:
    """One check: ``status`` is passed / failed / skipped; ``reason`` says why, always."""

    name: str
    status: str
    reason: str
    value: float | None = None
    threshold: float | None = None

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    @classmethod
    def ok(cls, name: str, reason: str, value: float | None = None,
           threshold: float | None = None) -> CheckResult:
        return cls(name, "passed", reason, value, threshold)

    @classmethod
    def fail(cls, name: str, reason: str, value: float | None = None,
             threshold: float | None = None) -> CheckResult:
        return cls(name, "failed", reason, value, threshold)

    @classmethod
    def skip(cls, name: str, reason: str) -> CheckResult:
        return cls(name, "skipped", reason)

    def to_dict(self) -> dict:
        return asdict(self)


def perplexity_check(prefix: str, result: SplitResult, baseline: float | None, baseline_name: str,
                     thresholds: Thresholds) -> CheckResult:
    """A language model's perplexity over ``baseline`` (the float model's), against
    ``max_perplexity_ratio``."""
    name = f"{prefix}/perplexity_ratio"
    limit = thresholds.max_perplexity_ratio or DEFAULT_PERPLEXITY_RATIO
    ppl = result.metrics.get("perplexity")
    if result.n == 0 or ppl is None or not math.isfinite(ppl):
        return CheckResult.skip(name, f"no perplexity for the {result.split} split")
    if baseline is None:
        return CheckResult.skip(name, f"no baseline perplexity for the {result.split} split")
    ratio = ppl / baseline
    text = f"perplexity {ppl:.4f} vs {baseline_name} {baseline:.4f}: ratio {ratio:.4f} (max {limit:g})"
    return (CheckResult.ok if ratio <= limit + 1e-12 else CheckResult.fail)(name, text, ratio, limit)


@dataclass(frozen=True)
class LogitTolerance:
    """The derived threshold of one split's logit-parity check and how it was derived; ``threshold`` is
    ``None`` when there is no PyTorch reference (``reason`` says so)."""

    threshold: float | None
    reason: str


def logit_parity_check(prefix: str, result: SplitResult, tolerance: LogitTolerance,
                       thresholds: Thresholds) -> CheckResult:
    """The largest |Δlogit| against the PyTorch reference (every class, every real position of a language
    model) against ``max_logit_diff`` when set, else the derived ``tolerance``."""
    name = f"{prefix}/logit_parity"
    if result.n == 0:
        return CheckResult.skip(name, f"the {result.split} split is empty")
    if result.parity is None or tolerance.threshold is None:
        return CheckResult.skip(name, tolerance.reason)
    value = result.parity.max_abs_logit_diff
    if thresholds.max_logit_diff is not None:
        limit = thresholds.max_logit_diff
        how = f"set by max_logit_diff; derived would be {tolerance.threshold:.3g}: {tolerance.reason}"
    else:
        limit, how = tolerance.threshold, tolerance.reason
    text = f"max |Δlogit| {value:.3g} against {result.parity.reference} (max {limit:.3g}, {how})"
    return (CheckResult.ok if value <= limit else CheckResult.fail)(name, text, value, limit)


def split_checks(prefix: str, result: SplitResult, baseline: float | None, baseline_name: str,
                 thresholds: Thresholds, baseline_perplexity: float | None = None,
                 logit_tolerance: LogitTolerance | None = None) -> list[CheckResult]:
    """Accuracy drop against ``baseline`` and agreement with the reference, for one split of one run; for a
    language model also its perplexity ratio against ``baseline_perplexity``; with ``logit_tolerance`` the
    logit-parity check."""
    checks = []
    if result.task == "language_model":
        checks.append(perplexity_check(prefix, result, baseline_perplexity, baseline_name, thresholds))
    name = f"{prefix}/accuracy_drop"
    if result.n == 0 or result.accuracy is None:
        checks.append(CheckResult.skip(name, f"the {result.split} split is empty"))
    elif baseline is None:
        checks.append(CheckResult.skip(name, f"no baseline accuracy for the {result.split} split"))
    else:
        drop = (baseline - result.accuracy) * 100.0
        text = (f"accuracy {result.accuracy:.4f} vs {baseline_name} {baseline:.4f}: drop {drop:.2f} pp "
                f"(max {thresholds.max_accuracy_drop:.2f})")
        make = CheckResult.ok if drop <= thresholds.max_accuracy_drop + 1e-9 else CheckResult.fail
        checks.append(make(name, text, drop, thresholds.max_accuracy_drop))
    name = f"{prefix}/agreement"
    parity = result.parity
    if result.n == 0:
        checks.append(CheckResult.skip(name, f"the {result.split} split is empty"))
    elif parity is None:
        checks.append(CheckResult.skip(name, "no reference logits"))
    else:
        shown = ", ".join(map(str, parity.flipped[:20])) + (" …" if len(parity.flipped) > 20 else "")
        text = (f"top-1 agreement with {parity.reference} {parity.agreement:.4f} (min "
                f"{thresholds.min_agreement}); "
                f"{len(parity.flipped)} flipped" + (f": [{shown}]" if parity.flipped else ""))
        make = CheckResult.ok if parity.agreement >= thresholds.min_agreement else CheckResult.fail
        checks.append(make(name, text, parity.agreement, thresholds.min_agreement))
    if logit_tolerance is not None:
        checks.append(logit_parity_check(prefix, result, logit_tolerance, thresholds))
    return checks


def layer_check(worst_layer: str | None, worst_steps: float | None, thresholds: Thresholds) -> CheckResult:
    """The largest per-layer error, in quantisation steps, against ``max_layer_error_steps``."""
    if worst_layer is None or worst_steps is None:
        return CheckResult.skip("layers/max_error_steps", "no quantised layer could be compared")
    text = (f"largest error {worst_steps:.3g} steps in layer {worst_layer} "
            f"(max {thresholds.max_layer_error_steps:g})")
    make = CheckResult.ok if worst_steps <= thresholds.max_layer_error_steps else CheckResult.fail
    return make("layers/max_error_steps", text, worst_steps, thresholds.max_layer_error_steps)


def verdict(statuses: Iterable[str]) -> str:
    """The one verdict of many statuses (checks' passed / failed / skipped, or reports' and providers'
    verdicts): ``error`` if any is an error; else ``failed`` if any failed; else ``passed`` if at least one
    passed; else ``error`` (nothing was evaluated: fail closed)."""
    statuses = set(statuses)
    if "error" in statuses:
        return "error"
    if "failed" in statuses:
        return "failed"
    return "passed" if "passed" in statuses else "error"


def exit_code(status: str) -> int:
    """The command line's exit code of a verdict: 0 passed, 1 failed, 2 anything else."""
    return EXIT_CODES.get(status, 2)


def decide(checks: list[CheckResult], errors: list[str]) -> str:
    """``error`` / ``failed`` / ``passed`` of one validation; no evaluated check is an error (fail closed)."""
    return verdict([c.status for c in checks] + (["error"] if errors else []))
