"""onnxruntime sessions: which providers, which optimisation level, and the safe options for known traps.

Provider selection is pure (``resolve_providers`` takes the list of available providers), so it is tested
without a GPU. GPU providers are asked for with explicit options (no TF32, no fp16/int8 TensorRT engines, no
engine cache) and followed by their fallbacks; after the session is made, ``session.get_providers()`` says
what onnxruntime actually registered, and a session that silently fell back to CPU is treated as the provider
being unavailable.

Known onnxruntime traps, each handled by a named workaround (listed in the report when applied):

- ``matmulnbits_accuracy_level_0``: at ORT_ENABLE_EXTENDED and above a weight-only DequantizeLinear →
  MatMul/Gemm is rewritten to MatMulNBits with accuracy_level 4 (inexact); session config
  ``session.qdq_matmulnbits_accuracy_level = "0"`` keeps it exact.
- ``disable_QDQSelectorActionTransformer``: INT2 weights with activation QDQ fail session creation, and INT2
  weight-only DequantizeLinear → MatMul becomes a 2-bit MatMulNBits that is inexact and not deterministic
  (measured with onnxruntime 1.32 even at accuracy level 0); disabling the QDQ selector/action transformer
  avoids both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import onnxruntime as ort

from runtime_checks.graph import ModelInfo
from sgsc_export.errors import ValidationError

__all__ = [
    "OPT_LEVELS",
    "PROVIDERS",
    "ProviderPlan",
    "ProviderUnavailable",
    "SessionPlan",
    "make_session",
    "parse_opt_levels",
    "plan_session",
    "resolve_providers",
    "run_batched",
]

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
             "tensorrt": "TensorrtExecutionProvider"}
OPT_LEVELS = {"disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
              "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
_CUDA_OPTIONS = {"device_id": "0", "use_tf32": "0", "cudnn_conv_algo_search": "DEFAULT"}
_TRT_OPTIONS = {"device_id": "0", "trt_fp16_enable": "False", "trt_int8_enable": "False",
                "trt_engine_cache_enable": "False"}


class ProviderUnavailable(ValidationError):
    """A provider is listed by onnxruntime but did not load (libraries or device missing)."""


@dataclass(frozen=True)
class ProviderPlan:
    """A provider to run on: its short name, onnxruntime name and the provider list handed to the session."""

    name: str
    ep: str
    providers: tuple = ()

    @property
    def is_gpu(self) -> bool:
        return self.name != "cpu"


def _provider_list(name: str) -> tuple:
    if name == "cuda":
        return (("CUDAExecutionProvider", dict(_CUDA_OPTIONS)), "CPUExecutionProvider")
    if name == "tensorrt":
        return (("TensorrtExecutionProvider", dict(_TRT_OPTIONS)),
                ("CUDAExecutionProvider", dict(_CUDA_OPTIONS)),
                "CPUExecutionProvider")
    return ("CPUExecutionProvider",)


def resolve_providers(requested: Sequence[str], available: Sequence[str] | None = None,
                      require: bool = False) -> tuple[list[ProviderPlan], dict[str, str]]:
    """Split ``requested`` (short or onnxruntime names) into plans and ``{name: reason}`` of skipped ones.

    A provider that is unknown is always an error; one that is not available is skipped with its reason, or an
    error under ``require``. No provider left to run on is an error.
    """
    available = list(ort.get_available_providers() if available is None else available)
    by_ep = {ep: short for short, ep in PROVIDERS.items()}
    plans, skipped = [], {}
    for raw in requested:
        name = by_ep.get(raw, raw.strip().lower())
        if name not in PROVIDERS:
            raise ValidationError(f"unknown provider {raw!r}; choose from {', '.join(PROVIDERS)}")
        if any(p.name == name for p in plans) or name in skipped:
            continue
        ep = PROVIDERS[name]
        if ep not in available:
            reason = (f"{ep} is not available in this onnxruntime build (available: {', '.join(available)}); "
                      f"GPU providers need onnxruntime-gpu installed in place of onnxruntime, and a GPU")
            if require:
                raise ValidationError(f"provider {name!r} required but unavailable: {reason}")
            skipped[name] = reason
            continue
        plans.append(ProviderPlan(name, ep, _provider_list(name)))
    if not plans:
        raise ValidationError("no requested provider is available: " + "; ".join(f"{k}: {v}" for k, v in
                                                                                  skipped.items()))
    return plans, skipped


def parse_opt_levels(levels: Sequence[str]) -> list[str]:
    """Validate optimisation level names, keeping their order and dropping repeats."""
    out = []
    for level in levels:
        level = level.strip().lower()
        if level not in OPT_LEVELS:
            raise ValidationError(f"unknown optimisation level {level!r}; choose "
                                  f"from {', '.join(OPT_LEVELS)}")
        if level not in out:
            out.append(level)
    if not out:
        raise ValidationError("no optimisation level given")
    return out


@dataclass
class SessionPlan:
    """Session config entries and disabled optimizers for a model, with the named workarounds they
    implement."""

    config: dict[str, str] = field(default_factory=dict)
    disabled_optimizers: list[str] = field(default_factory=list)
    workarounds: dict[str, str] = field(default_factory=dict)


def plan_session(info: ModelInfo, safe: bool = True) -> SessionPlan:
    """The workarounds this model needs (none when ``safe`` is False, to reproduce onnxruntime's defaults)."""
    plan = SessionPlan()
    if not safe:
        return plan
    matmul_like = [layer for layer in info.layers if layer.op_type in ("MatMul", "Gemm")]
    if matmul_like:
        plan.config["session.qdq_matmulnbits_accuracy_level"] = "0"
        plan.workarounds["matmulnbits_accuracy_level_0"] = (
            f"{len(matmul_like)} weight-only DequantizeLinear→MatMul/Gemm layer(s): onnxruntime would "
            "rewrite them to MatMulNBits with accuracy_level 4 (inexact); "
            "session.qdq_matmulnbits_accuracy_level=0")
    if 2 in info.weight_bits:
        plan.disabled_optimizers.append("QDQSelectorActionTransformer")
        why = "with activation QDQ session creation fails" if info.has_activation_qdq else \
            "DQ→MatMul becomes an inexact 2-bit MatMulNBits"
        plan.workarounds["disable_QDQSelectorActionTransformer"] = (
            f"INT2 weights ({why}); optimizer QDQSelectorActionTransformer disabled")
    return plan


def make_session(model: ModelInfo | bytes | str, provider: ProviderPlan, level: str, plan: SessionPlan,
                 threads: int, optimized_path: str | None = None,
                 profile_prefix: str | None = None) -> ort.InferenceSession:
    """An InferenceSession with a fixed thread count; raise ValidationError if the provider did not load."""
    so = ort.SessionOptions()
    so.graph_optimization_level = OPT_LEVELS[level]
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    for key, value in plan.config.items():
        so.add_session_config_entry(key, value)
    if optimized_path:
        so.optimized_model_filepath = optimized_path
    if profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    source = str(model.path) if isinstance(model, ModelInfo) else model
    kwargs = {"disabled_optimizers": plan.disabled_optimizers} if plan.disabled_optimizers else {}
    try:
        session = ort.InferenceSession(source, so, providers=list(provider.providers), **kwargs)
    except Exception as exc:  # onnxruntime raises its own exception types per failure
        raise ValidationError(f"{provider.name}/{level}: onnxruntime could not create the session: "
                              f"{str(exc).splitlines()[0]}") from exc
    assigned = session.get_providers()
    if not assigned or assigned[0] != provider.ep:
        raise ProviderUnavailable(f"{provider.name}/{level}: onnxruntime registered {assigned} instead of "
                              f"{provider.ep} (provider libraries missing or the device unusable)")
    return session


def run_batched(session: ort.InferenceSession, x: np.ndarray, batch_size: int = 256,
                outputs: list[str] | None = None) -> list[np.ndarray]:
    """Run ``session`` on ``x`` in batches; return each requested output concatenated over the batches."""
    name = session.get_inputs()[0].name
    if len(x) == 0:
        return [np.zeros((0,), np.float32) for _ in (outputs or session.get_outputs())]
    parts: list[list[np.ndarray]] = []
    for start in range(0, len(x), batch_size):
        result = session.run(outputs, {name: x[start:start + batch_size]})
        if not parts:
            parts = [[] for _ in result]
        for acc, arr in zip(parts, result):
            acc.append(np.asarray(arr))
    return [np.concatenate(acc) for acc in parts]

