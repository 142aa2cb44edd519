"""``validate``: run an ONNX model on every asked provider and optimisation level and judge it.

Bad input (a missing or invalid file, a preservation set that is not the model's, an unknown provider, a
required provider that is missing) raises :class:`ValidationError` before anything runs. A failure while
running (a session that cannot be created, a kernel error) is recorded in ``Report.errors``: the report is
still produced, and its status is ``error``. Thresholds that are not met make it ``failed``. Only a clean run
is ``passed``.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from runtime_checks.accuracy import TASK_EVALUATORS, evaluate_split
from runtime_checks.config import ValidateConfig
from runtime_checks.data import EvalData
from runtime_checks.fusion import fusion_report
from runtime_checks.gate import (
    DEFAULT_PERPLEXITY_RATIO,
    LogitTolerance,
    decide,
    layer_check,
    split_checks,
)
from runtime_checks.graph import ModelInfo, load_model
from runtime_checks.language_model import PAD
from runtime_checks.latency import LatencyConfig, measure_latency
from runtime_checks.layers import layer_parity
from runtime_checks.logit_parity import EXACT_C, float_twin, logit_tolerance_basis
from runtime_checks.reports import SPLITS, ProviderResult, Report
from runtime_checks.sessions import (
    ProviderPlan,
    ProviderUnavailable,
    make_session,
    parse_opt_levels,
    plan_session,
    resolve_providers,
    run_batched,
)
from sgsc_export.errors import ValidationError

__all__ = ["load_data", "validate"]

LayerReference = str | Path | Mapping[str, np.ndarray] | None


def load_data(spec: EvalData | str | Path | Any) -> EvalData:
    """``EvalData`` as is; a directory → :meth:`EvalData.from_run_dir`; ``npz:PATH`` or a file → ``from_npz``;
    an in-memory ``CompressedModel`` → :meth:`EvalData.from_compressed`."""
    if isinstance(spec, EvalData):
        return spec
    if hasattr(spec, "manifest") and hasattr(spec, "eval"):
        return EvalData.from_compressed(spec)
    text = str(spec)
    if text.startswith("npz:"):
        return EvalData.from_npz(text[4:])
    return EvalData.from_run_dir(text) if Path(text).is_dir() else EvalData.from_npz(text)


def _model_summary(info: ModelInfo) -> dict:
    return {"path": str(info.path), "sha256": hashlib.sha256(info.path.read_bytes()).hexdigest(),
            "opset": info.opset, "task": info.task, "metadata": info.metadata,
            "quantized_layers": [layer.name for layer in info.layers], "weight_bits": info.weight_bits,
            "activation_qdq": info.has_activation_qdq}


def _check_input(info: ModelInfo, data: EvalData) -> None:
    """The data's inputs have the rank, the fixed dimensions and the kind (float / token ids) that the model's
    input declares: refused with one line before any session runs, instead of one onnxruntime error per
    run."""
    import onnx

    vi = next(v for v in info.model.graph.input if v.name == info.input_name)
    tensor = vi.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
    x = data.x_test
    want = ["N" if i == 0 or d is None else d for i, d in enumerate(dims)]
    if tensor.HasField("shape") and (len(dims) != x.ndim
                                     or any(d is not None and i > 0 and d != n
                                            for i, (d, n) in enumerate(zip(dims, x.shape)))):
        raise ValidationError(f"{data.source}: inputs of shape {list(x.shape)} do not fit the model's input "
                              f"{info.input_name!r} of shape {want}; give data in the model's layout")
    is_int = tensor.elem_type in (onnx.TensorProto.INT64, onnx.TensorProto.INT32)
    if is_int != bool(np.issubdtype(x.dtype, np.integer)):
        kind = "integer token ids" if is_int else "float values"
        raise ValidationError(f"{data.source}: the model's input {info.input_name!r} takes {kind}, the data "
                              f"holds "
                              f"{x.dtype}; give data of the model's input type")


def _check_labels(data: EvalData, outputs: dict[str, np.ndarray]) -> None:
    """Every label is a class (a vocabulary index) the model has an output for; padding is ``PAD``."""
    for split, out in outputs.items():
        y = data.split(split)[1]
        real = y[y != PAD] if y.ndim == 2 else y
        if real.size and (real.min() < 0 or real.max() >= out.shape[-1]):
            raise ValidationError(f"{data.source}: the {split} labels range over [{int(real.min())}, "
                                  f"{int(real.max())}] but the model has {out.shape[-1]} outputs; labels "
                                  f"must be "
                                  f"class indices in [0, {out.shape[-1]})")


def _check_preservation(info: ModelInfo, data: EvalData, report: Report) -> None:
    expected, actual = info.preservation_sha256, data.preservation_sha256
    report.data["preservation_sha256"] = actual
    if expected is None:
        report.data["preservation_check"] = "not checked: the model has no sgsc.preservation_sha256 metadata"
        report.notes.append("model metadata has no sgsc.preservation_sha256 (made elsewhere?): the "
                            "preservation "
                            "set was not checked against the model")
    elif expected != actual:
        raise ValidationError(f"wrong preservation set: the data's SHA-256 {actual[:12]}… does not match the "
                              f"model's sgsc.preservation_sha256 {expected[:12]}…")
    else:
        report.data["preservation_check"] = "matched"


def _artifact_weights(run_dir: Path | None) -> tuple[dict | None, list[str]]:
    """The artifact's float state dict and layer names, when ``--run DIR`` has them (read with numpy only)."""
    if run_dir is None or not (run_dir / "model.safetensors").is_file():
        return None, []
    import json

    from safetensors.numpy import load_file
    manifest = json.loads((run_dir / "manifest.json").read_text())
    names = [layer["name"] for layer in manifest.get("layers", [])]
    return load_file(str(run_dir / "model.safetensors")), names


def validate(onnx_path: str | Path, data: EvalData | str | Path | Any,
             config: ValidateConfig | None = None, *, layer_reference: LayerReference = None,
             available_providers: Sequence[str] | None = None,
             **settings: Any) -> Report:
    """Validate ``onnx_path`` on ``data``; see the module docstring for what raises and what is reported.

    ``config`` holds the settings; without it, ``settings`` are :class:`ValidateConfig`'s fields as keyword
    arguments (``providers=``, ``opt_levels=``, ``thresholds=Thresholds(...)``, ``layers=``, ``latency=``,
    ``require_providers=``, ``threads=``, ``batch_sizes=``, ``batch_size=``, ``safe_session_options=``,
    ``layer_samples=``). ``layer_reference``: a reference ONNX path or ``{layer name: activations}`` on the
    first ``layer_samples`` preservation samples (test samples if the preservation set is empty); by default
    the artifact's float weights when ``data`` came from a run directory, else the model's own dequantized
    weights. ``available_providers`` replaces onnxruntime's list (tests of provider selection).
    """
    if config is not None and settings:
        raise TypeError("validate(): give a ValidateConfig or keyword settings, not both")
    config = ValidateConfig.from_kwargs(**settings) if config is None else config
    thresholds, threads, batch_size = config.thresholds, config.threads, config.batch_size
    levels_asked, providers, require_providers = config.opt_levels, config.providers, config.require_providers
    info = load_model(onnx_path)
    data = load_data(data)
    if info.task == "language_model" and thresholds.max_perplexity_ratio is None:
        thresholds = dataclasses.replace(thresholds,
                                         max_perplexity_ratio=DEFAULT_PERPLEXITY_RATIO)  # reported
    report = Report(thresholds=thresholds, model=_model_summary(info))
    report.data = {"source": data.source, "n_test": len(data.y_test),
                   "n_preservation": len(data.y_preservation)}
    _check_preservation(info, data, report)
    _check_input(info, data)
    if info.task not in TASK_EVALUATORS:
        raise ValidationError(f"task {info.task!r} (sgsc.task) is not supported yet; supported: "
                              f"{', '.join(TASK_EVALUATORS)}")
    plans, report.skipped_providers = resolve_providers(providers, available_providers, require_providers)
    levels = parse_opt_levels(levels_asked)
    session_plan = plan_session(info, config.safe_session_options)
    report.workarounds = dict(session_plan.workarounds)
    report.session = {"threads": threads, "batch_size": batch_size,
                      "safe_session_options": config.safe_session_options,
                      "config_entries": session_plan.config,
                      "disabled_optimizers": session_plan.disabled_optimizers}

    logits: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    for plan in list(plans):
        result = ProviderResult(plan.name, plan.ep)
        for level in levels:
            try:
                session = make_session(info, plan, level, session_plan, threads)
                result.assigned = session.get_providers()
                logits[plan.name, level] = {s: run_batched(session, data.split(s)[0], batch_size)[0]
                                            for s in SPLITS}
            except ProviderUnavailable as exc:
                if require_providers:
                    report.errors.append(str(exc))
                else:
                    report.skipped_providers[plan.name] = str(exc)
                    plans.remove(plan)
                break
            except Exception as exc:  # noqa: BLE001 - fail closed: anything onnxruntime raises is a run error
                report.errors.append(f"{plan.name}/{level}: {type(exc).__name__}: {str(exc).splitlines()[0]}")
        if plan in plans:
            report.providers[plan.name] = result

    if not logits and not report.errors:
        report.errors.append("no provider produced outputs")
    if logits:
        _check_labels(data, next(iter(logits.values())))
        tolerances = None
        try:
            tolerances = _logit_tolerances(info, data, logits, report, session_plan, threads, batch_size)
        except Exception as exc:  # noqa: BLE001 - fail closed: a tolerance that cannot be derived is an error
            report.errors.append(f"logit_parity could not run: {type(exc).__name__}: "
                                 f"{str(exc).splitlines()[0]}")
        _judge(info, data, logits, report, tolerances)
    plan_by_name = {p.name: p for p in plans}
    if not report.errors:
        try:
            _extras(info, data, plan_by_name, levels, session_plan, threads, config.batch_sizes,
                    config.latency,
                    report)
            if config.layers:
                _layers(info, data, plans[0], levels, session_plan, threads, layer_reference,
                        config.layer_samples,
                        report)
        except Exception as exc:  # noqa: BLE001 - fail closed
            report.errors.append(f"{type(exc).__name__}: {str(exc).splitlines()[0]}")
    report.status = decide(report.checks, report.errors)
    if report.status == "error" and not report.errors:
        report.errors.append("no check could be evaluated (empty splits, no reference, no baseline)")
    return report


_CPU = ProviderPlan("cpu", "CPUExecutionProvider", ("CPUExecutionProvider",))


def _twin_logits(info: ModelInfo, data: EvalData, session_plan, threads: int, batch_size: int
                 ) -> dict[str, np.ndarray]:
    """The float twin's logits (activation QDQ removed, see logit_parity), unoptimised on the CPU, per
    split."""
    twin = float_twin(info.model).SerializeToString()
    session = make_session(twin, _CPU, "disabled", session_plan, threads)
    return {s: run_batched(session, data.split(s)[0], batch_size)[0] for s in SPLITS}


def _logit_tolerances(info: ModelInfo, data: EvalData, logits: dict, report: Report, session_plan,
                      threads: int,
                      batch_size: int) -> dict[tuple[str, str, str], LogitTolerance]:
    """The logit-parity tolerance of every (provider, level, split); see
    :mod:`runtime_checks.logit_parity`."""
    basis = logit_tolerance_basis(info)
    report.data["logit_parity"] = {"kind": basis.kind, "profile": basis.profile, "note": basis.note,
                                   "sum_sqrt_fan_in": basis.sum_sqrt_fan_in, "exact_c": EXACT_C}
    from_artifact = data.source.startswith(("run:", "compressed-model"))
    twin = None
    if basis.kind != "exact" and any(data.split(s)[2] is not None for s in SPLITS):
        twin = _twin_logits(info, data, session_plan, threads, batch_size)
    out = {}
    for split in SPLITS:
        _, y, ref, _ = data.split(split)
        if ref is None:
            if from_artifact and len(y):
                report.errors.append(f"{split}/logit_parity could not run: the artifact's evaluation data "
                                     f"has no "
                                     f"logits_{split} (the PyTorch reference); re-run `sgsc compress`")
            reason = (f"no PyTorch reference logits for the {split} split (an artifact's eval.npz "
                      f"logits_{split}, "
                      f"or `logits` in the npz): the logits cannot be compared")
            out.update({(p, lvl, split): LogitTolerance(None, reason) for p, lvl in logits})
            continue
        real = y != PAD if y.ndim == 2 else np.ones(len(y), bool)
        ref_max = float(np.abs(ref[real]).max(initial=0.0))
        for (provider, level), outputs in logits.items():
            d_q = None
            if twin is not None:
                d_q = float(np.abs(outputs[split][real] - twin[split][real]).max(initial=0.0))
            out[provider, level, split] = LogitTolerance(*basis.threshold(ref_max, d_q))
    return out


def _judge(info: ModelInfo, data: EvalData, logits: dict, report: Report,
           tolerances: dict[tuple[str, str, str], LogitTolerance] | None = None) -> None:
    """Accuracy and parity for every run, then the threshold checks."""
    first = next(iter(logits))
    tolerances = tolerances or {}
    for split in SPLITS:
        _, y, ref, float_acc = data.split(split)
        ref_name = "pytorch"
        if ref is None:
            ref, ref_name = logits[first][split], f"onnx:{first[0]}/{first[1]}"
            if len(y):
                report.notes.append(f"{split}: no PyTorch reference logits; agreement is measured against "
                                    f"{ref_name}")
        results = {key: evaluate_split(info.task, split, out[split], y, ref, ref_name) for key,
                   out in logits.items()}
        baseline, baseline_name = float_acc, "the float model"
        if baseline is None and len(y):
            baseline, baseline_name = results[first].accuracy, f"onnx:{first[0]}/{first[1]}"
            report.notes.append(f"{split}: no float accuracy recorded; the accuracy drop is measured against "
                                f"{baseline_name}")
        for (provider, level), result in results.items():
            report.providers[provider].levels.setdefault(level, {})[split] = result
            report.checks += split_checks(f"{provider}/{level}/{split}", result, baseline, baseline_name,
                                          report.thresholds, data.float_perplexity(split),
                                          tolerances.get((provider, level, split)))


def _extras(info, data, plans, levels, session_plan, threads, batch_sizes, latency, report) -> None:
    """Fusion report (every provider and level) and latency (every provider, at the last level)."""
    sample = data.x_test[:8]
    for name, plan in plans.items():
        if name not in report.providers:
            continue
        report.fusion[name] = {lvl: fusion_report(info, plan, lvl, session_plan, threads, sample)
                               for lvl in levels}
        if latency:
            session = make_session(info, plan, levels[-1], session_plan, threads)
            report.latency[name] = measure_latency(session, data.x_test, name, levels[-1], threads,
                                                   LatencyConfig(tuple(batch_sizes)))


def _layers(info, data, plan, levels, session_plan, threads, reference, samples, report) -> None:
    """Per-layer parity on the first provider, and its check. ``--layers`` asks for it, so a comparison that
    cannot be made (no quantised layers, a reference that matches none or only some of them, an artifact
    without its float weights) is an error, never a skipped check."""
    name = "layers/max_error_steps"
    if not info.layers:
        report.errors.append(f"{name} could not run: per-layer parity was asked for but the model has no "
                             f"quantised "
                             f"layers (DequantizeLinear → Conv/Gemm/MatMul); drop --layers")
        return
    x = data.x_preservation if len(data.x_preservation) else data.x_test
    x = x[:samples]
    kwargs: dict = {}
    if isinstance(reference, Mapping):
        kwargs["activations"] = reference
    elif reference is not None:
        kwargs["reference_model"] = str(reference)
    else:
        kwargs["artifact_state"], kwargs["artifact_layers"] = _artifact_weights(data.run_dir)
        if data.run_dir is not None and kwargs["artifact_state"] is None:
            report.errors.append(f"{name} could not run: the artifact {data.run_dir} has no "
                                 f"model.safetensors (its "
                                 f"float weights, the per-layer reference); give --layer-reference REF.onnx")
            return
    result = layer_parity(info, x, levels, session_plan, threads, provider=plan, **kwargs)
    report.layers = result
    compared = {e.layer for e in result.layers}
    if kwargs.get("artifact_state") is not None:  # a layer without its artifact weight: compared to itself
        compared = {e.layer for e in result.layers if e.reference == "artifact_weights"}
    missing = [layer.name for layer in info.layers if layer.name not in compared]
    if missing:
        shown = ", ".join(missing[:5]) + (" …" if len(missing) > 5 else "")
        report.errors.append(f"{name} could not run: {len(missing)} of {len(info.layers)} quantised layers "
                             f"have no "
                             f"match in the reference {result.reference} ({shown}); give a reference of the "
                             f"same "
                             f"model")
        return
    worst = result.worst
    report.checks.append(layer_check(worst.layer if worst else None, worst.max_error_steps if worst else None,
                                     report.thresholds))
