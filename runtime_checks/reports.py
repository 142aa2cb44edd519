"""The validation report: a typed result, its ``report.json`` form, a Markdown summary and JUnit XML.

Every file is written atomically (a temp file in the target directory, then ``os.replace``), so a pipeline
never reads half a report. The JSON schema is documented in docs/REPORT.md; ``SCHEMA_VERSION`` changes when a
key is removed or changes meaning (adding keys does not).
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from runtime_checks.accuracy import SplitResult, worst_of
from runtime_checks.fusion import FusionResult
from runtime_checks.gate import CheckResult, Thresholds, exit_code
from runtime_checks.latency import LatencyResult
from runtime_checks.layers import LayerParityResult
from sgsc_export._io import write_atomic

__all__ = ["SCHEMA_VERSION", "ProviderResult", "Report", "write_atomic"]

SCHEMA_VERSION = 1
SPLITS = ("preservation", "test")


@dataclass
class ProviderResult:
    """One provider's runs: ``levels[opt_level][split]``, and the providers onnxruntime actually assigned."""

    name: str
    execution_provider: str
    assigned: list[str] = field(default_factory=list)
    levels: dict[str, dict[str, SplitResult]] = field(default_factory=dict)

    def summary(self, split: str) -> SplitResult | None:
        return worst_of([runs[split] for runs in self.levels.values() if split in runs])

    def to_dict(self) -> dict:
        out: dict = {"execution_provider": self.execution_provider, "assigned_providers": self.assigned}
        for split in SPLITS:
            summary = self.summary(split)
            out[split] = summary.to_dict() if summary else None
        out["opt_levels"] = {level: {split: r.to_dict() for split, r in runs.items()}
                             for level, runs in self.levels.items()}
        return out


@dataclass
class Report:
    """Everything one validation found. ``status``: passed / failed / error; ``passed`` only when passed."""

    model: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)
    thresholds: Thresholds = field(default_factory=Thresholds)
    providers: dict[str, ProviderResult] = field(default_factory=dict)
    checks: list[CheckResult] = field(default_factory=list)
    fusion: dict[str, dict[str, FusionResult]] = field(default_factory=dict)
    latency: dict[str, LatencyResult] = field(default_factory=dict)
    layers: LayerParityResult | None = None
    workarounds: dict[str, str] = field(default_factory=dict)
    session: dict = field(default_factory=dict)
    skipped_providers: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    status: str = "error"

    @property
    def passed(self) -> bool:
        return self.status == "passed" and not self.errors

    @property
    def exit_code(self) -> int:
        return exit_code(self.status) if not self.errors else 2

    @property
    def failed_checks(self) -> list[CheckResult]:
        return [c for c in self.checks if c.status == "failed"]

    def to_dict(self) -> dict:
        return {
            "schema_version": SCHEMA_VERSION, "passed": self.passed, "status": self.status,
            "model": self.model, "data": self.data, "thresholds": self.thresholds.to_dict(),
            "providers": {name: p.to_dict() for name, p in self.providers.items()},
            "checks": [c.to_dict() for c in self.checks],
            "fusion": {p: {lvl: f.to_dict() for lvl, f in levels.items()} for p,
                       levels in self.fusion.items()},
            "latency_ms": {p: r.to_dict() for p, r in self.latency.items()},
            "layers": self.layers.to_dict() if self.layers else None,
            "workarounds": self.workarounds, "session": self.session,
            "skipped_providers": self.skipped_providers, "errors": self.errors, "notes": self.notes,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    def to_markdown(self) -> str:
        """A summary for a pull request or CI page: verdict, failed checks, the per-provider table."""
        icon = {"passed": "PASSED", "failed": "FAILED", "error": "ERROR"}[self.status]
        lines = [f"# sgsc validate: {icon}", "", f"Model: `{self.model.get('path', '?')}`  ",
                 (f"Data: `{self.data.get('source', '?')}` (test {self.data.get('n_test')}, preservation "
                  f"{self.data.get('n_preservation')})"), ""]
        for error in self.errors:
            lines.append(f"- **error**: {error}")
        for check in self.failed_checks:
            lines.append(f"- **failed** `{check.name}`: {check.reason}")
        if self.errors or self.failed_checks:
            lines.append("")
        lines += ["| provider | opt level | split | accuracy | agreement | flipped | max abs dlogit |",
                  "|---|---|---|---|---|---|---|"]
        for name, provider in self.providers.items():
            for level, runs in provider.levels.items():
                for split, r in runs.items():
                    p = r.parity
                    lines.append(f"| {name} | {level} | {split} | {_fmt(r.accuracy)} | "
                                 f"{_fmt(p.agreement if p else None)} | {len(p.flipped) if p else '-'} | "
                                 f"{_fmt(p.max_abs_logit_diff if p else None, '.3g')} |")
        lm_rows = [(name, level, split, r.metrics) for name, provider in self.providers.items()
                   for level, runs in provider.levels.items() for split, r in runs.items()
                   if "perplexity" in r.metrics]
        if lm_rows:  # a language model's own metrics
            lines += ["", ("| provider | opt level | split | loss | perplexity | PyTorch loss | "
                           "next-token agreement |"),
                      "|---|---|---|---|---|---|---|"]
            lines += [f"| {n} | {lv} | {sp} | {_fmt(m['loss'])} | {_fmt(m['perplexity'])} | "
                      f"{_fmt(m.get('reference_loss'))} | {_fmt(m.get('next_token_agreement'))} |"
                      for n, lv, sp, m in lm_rows]
        if self.layers and self.layers.worst:
            worst = self.layers.worst
            lines += ["", (f"Largest per-layer error: `{worst.layer}` ({worst.max_error_steps:.3g} "
                           f"quantisation steps, channel {worst.worst_channel}, reference "
                           f"{self.layers.reference})")]
        for provider, levels in self.fusion.items():
            for level, fusion in levels.items():
                d = fusion.to_dict()
                lines.append(f"\nFusion {provider}/{level}: integer kernels {d['integer_layers'] or 'none'}; "
                             f"dequantised to float {d['float_layers'] or 'none'}")
        for provider, lat in self.latency.items():
            cells = ", ".join(f"batch {b}: p50 {s['p50']:.3f} ms, p90 {s['p90']:.3f} ms" for b,
                              s in lat.ms.items())
            lines.append(f"\nLatency {provider}/{lat.opt_level} ({lat.threads} threads): {cells}")
        for name, text in self.workarounds.items():
            lines.append(f"\nWorkaround `{name}`: {text}")
        for name, reason in self.skipped_providers.items():
            lines.append(f"\nSkipped provider `{name}`: {reason}")
        for note in self.notes:
            lines.append(f"\nNote: {note}")
        return "\n".join(lines) + "\n"

    def to_junit(self) -> str:
        """JUnit XML: one testcase per check (skipped ones as <skipped>), one <error> case per error."""
        suite = ET.Element("testsuite", name="sgsc.validate")
        for check in self.checks:
            case = ET.SubElement(suite, "testcase", classname="sgsc.validate", name=check.name)
            if check.status == "failed":
                ET.SubElement(case, "failure", message=check.reason).text = check.reason
            elif check.status == "skipped":
                ET.SubElement(case, "skipped", message=check.reason)
        for i, error in enumerate(self.errors):
            case = ET.SubElement(suite, "testcase", classname="sgsc.validate", name=f"error_{i}")
            ET.SubElement(case, "error", message=error).text = error
        suite.set("tests", str(len(suite)))
        suite.set("failures", str(len(self.failed_checks)))
        suite.set("errors", str(len(self.errors)))
        suite.set("skipped", str(sum(c.status == "skipped" for c in self.checks)))
        return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"


def _fmt(value: float | None, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


