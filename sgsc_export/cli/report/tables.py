"""The report's tables as rows of strings, from the run directory's JSON files; HTML and Markdown render
them."""

from __future__ import annotations

from typing import Any

from sgsc_export.cli.tables import all_weights

__all__ = ["Table", "failed_checks", "overview", "provider_verdicts", "run_verdict", "validation_table"]

Table = tuple[list[str], list[list[str]]]  # header, rows


def _f(value: float | None, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


def _kb(n: float) -> str:
    return f"{n / 1024:.1f} KB"


def provider_verdicts(report: dict[str, Any]) -> dict[str, str]:
    """passed / failed / error per provider of one validation report (its checks are named
    ``provider/…``)."""
    from runtime_checks.gate import verdict

    errored = ["error"] if report.get("errors") or report.get("status") == "error" else []
    out = {name: verdict([c["status"] for c in report.get("checks", []) if c["name"].startswith(name + "/")]
                         + errored)
           for name in report.get("providers", {})}
    for name in report.get("skipped_providers", {}):
        out[name] = "skipped"
    return out


def run_verdict(validations: dict[str, dict[str, Any]]) -> str:
    """The run's verdict over its profiles' reports, or ``not validated``."""
    from runtime_checks.gate import verdict

    return verdict(v.get("status", "error") for v in validations.values()) if validations else "not validated"


def overview(manifest: dict[str, Any], exports: dict[str, dict[str, Any]],
             validations: dict[str, dict[str, Any]]) -> Table:
    """Float vs compressed: accuracy, bits per weight, and each profile's file with its gate verdict."""
    m = manifest["metrics"]
    a = all_weights(manifest["totals"])
    rows = [["test accuracy", _f(m["float"]["test_accuracy"]), _f(m["compressed"]["test_accuracy"])],
            ["preservation accuracy", _f(m["float"]["preservation_accuracy"]),
             _f(m["compressed"]["preservation_accuracy"])],
            ["bits per weight (all weights)", "32",
             f"{a.bits / max(1, a.weights):.3f} (ratio {a.ratio:.4f})"]]
    first = next(iter(exports.values()), None)
    for profile, table in exports.items():
        verdicts = provider_verdicts(validations.get(profile, {}))
        gate = ", ".join(f"{p}: {v.upper()}" for p, v in verdicts.items()) or "not validated"
        totals = table["totals"]
        rows.append([f"ONNX file, {profile}", _kb(totals["float_onnx_bytes"]) + " (fp32, pruned)",
                     f"{_kb(totals['file_bytes'])} ({totals['ratio_to_float_onnx']:.3f}×); {gate}"])
    if first is None:
        rows.append(["ONNX file", "-", "not exported"])
    return ["", "float", "compressed"], rows


def validation_table(validations: dict[str, dict[str, Any]]) -> Table:
    """One row per profile, provider, optimisation level and split."""
    head = ["profile", "provider", "verdict", "opt level", "split", "n", "accuracy", "agreement", "flipped",
            "max |Δlogit|", "latency p50 b=1 (ms)"]
    rows = []
    for profile, report in validations.items():
        verdicts = provider_verdicts(report)
        for name, provider in report.get("providers", {}).items():
            lat = (report.get("latency_ms") or {}).get(name) or {}
            p50 = _f((lat.get("batch_1") or {}).get("p50"), ".3f")
            for level, splits in provider.get("opt_levels", {}).items():
                for split, r in splits.items():
                    rows.append([profile, name, verdicts.get(name, "?").upper(), level, split,
                                 str(r.get("n", "-")), _f(r.get("accuracy")), _f(r.get("agreement")),
                                 str(len(r.get("flipped") or [])),
                                 _f(r.get("max_abs_logit_diff"), ".3g"), p50])
        for name, reason in report.get("skipped_providers", {}).items():
            rows.append([profile, name, "SKIPPED", "-", "-", "-", "-", "-", "-", "-", reason])
        for error in report.get("errors", []):
            rows.append([profile, "-", "ERROR", "-", "-", "-", "-", "-", "-", "-", error])
    return head, rows


def failed_checks(validations: dict[str, dict[str, Any]]) -> list[str]:
    return [f"{profile}: {c['name']}: {c['reason']}" for profile, report in validations.items()
            for c in report.get("checks", []) if c["status"] == "failed"]
