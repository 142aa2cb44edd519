"""The benchmark's units of work: one method on one data set with one seed, trained and measured in
onnxruntime.

Every unit of a (data set, seed) starts from the same float reference, trained once by the ``float`` unit, so
the methods differ only in how they compress it:

- ``float``: the reference (the preset's float training), exported to ONNX as is;
- ``sgsc-g<γ>``: SGSC at the preset with γ; exported in every profile (portable, compact, ort-int8);
- ``lambda0-g<γ>``: the same without the preservation set (λ = 0, the paper's "unsafe" self-compression);
- ``qat<k>``: uniform quantisation-aware training at a fixed k bits (``learn_bits=False``: no learned bits, no
  pruning; the per-channel exponent still learns, as LSQ-style QAT does), as many steps as SGSC takes in all
  (its compression plus fine-tune steps), same distillation. (With 1,000 steps it fell short by up to 3.3 pp:
  ``benchmarks/results/qat_steps.jsonl``.)
- ``ptq``: onnxruntime's own post-training quantisation of the float ONNX: ``quantize_static`` (QDQ,
  per-channel INT8 weights, UINT8 activations, MinMax calibration on the same preservation set SGSC selected),
  and its 4-bit weight-only ``MatMulNBitsQuantizer`` (MatMul/Gemm only; convolutions stay float).

Accuracy (loss for the language model) is measured on the exported ``.onnx`` in onnxruntime CPU, on the test
split and the preservation set, so every number is of the file that would ship. Latency is measured later, by
``benchmarks.run``, with every model of a data set in one process.
"""

from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
DATA_DIRS = {"digits": None, "mnist": DATA / "mnist-t10k", "names": DATA / "names"}
PROFILES = {"sgsc": ("portable", "compact", "ort-int8"), "lambda0": ("portable", "compact"),
            "qat": ("portable",)}
OPSET_FLOAT = 21


@dataclass(frozen=True)
class Unit:
    dataset: str
    seed: int
    method: str  # float | ptq | sgsc | lambda0 | qat
    gamma: float | None = None
    bits: int | None = None
    lam: float | None = None  # SGSC's λ where it is not the preset's

    @property
    def key(self) -> str:
        tail = {"sgsc": f"-g{self.gamma}", "lambda0": f"-g{self.gamma}",
                "qat": str(self.bits)}.get(self.method, "")
        tail += f"-l{self.lam}" if self.lam is not None else ""
        return f"{self.dataset}/s{self.seed}/{self.method}{tail}"

    def deps(self, default_gamma: float) -> tuple[Unit, ...]:
        if self.method == "float":
            return ()
        ref = Unit(self.dataset, self.seed, "float")
        if self.method == "ptq":  # calibrates on the preservation set the default SGSC run selected
            return (ref, Unit(self.dataset, self.seed, "sgsc", gamma=default_gamma))
        return (ref,)


def workdir(suite: str, unit: Unit) -> Path:
    return ROOT / "runs" / "bench" / suite / unit.key


# suites that never see the test split: their "test" is a validation split held out of the training split
VALIDATION_SUITES = frozenset({"select"})
HOLDOUT = 0.2


@functools.lru_cache(maxsize=8)
def dataset(name: str, holdout: bool = False):
    """The data set's train/test split; with ``holdout``, the training split alone, cut into train and a
    validation split (stratified by class where there is one, fixed seed) that stands in for "test", so that
    settings chosen on it never saw the test split."""
    import dataclasses

    from sklearn.model_selection import train_test_split

    from sgsc_export import load_dataset

    data = load_dataset(name, DATA_DIRS[name], seed=0)
    if not holdout:
        return data
    strata = data.y_train if data.y_train.ndim == 1 else None  # a language model's targets are sequences
    xtr, xva, ytr, yva = train_test_split(data.x_train, data.y_train, test_size=HOLDOUT, stratify=strata,
                                          random_state=0)
    return dataclasses.replace(data, name=f"{data.name} (validation)", x_train=xtr, y_train=ytr, x_test=xva,
                               y_test=yva)


def data_for(suite: str, name: str):
    return dataset(name, holdout=suite in VALIDATION_SUITES)


def _model(name: str):
    from sgsc_export.models import build_model, default_factory, default_kwargs

    return build_model(default_factory(name), default_kwargs(dataset(name)))[0]


def _spec(name: str) -> dict[str, Any]:
    from sgsc_export.models import default_factory, default_kwargs

    return {"factory": default_factory(name), "kwargs": default_kwargs(dataset(name))}


def config_for(unit: Unit):
    """The CompressConfig of a unit: the data set's preset, with the method's changes."""
    from sgsc_export.presets import preset

    base = preset(unit.dataset).replace(seed=unit.seed)
    if unit.method == "sgsc":
        return base.replace(gamma=unit.gamma, lam=base.lam if unit.lam is None else unit.lam)
    if unit.method == "lambda0":
        return base.replace(gamma=unit.gamma, lam=0.0)
    if unit.method == "qat":
        return base.replace(learn_bits=False, init_bits=float(unit.bits), max_bits=max(float(unit.bits), 1.0),
                            gamma=0.0, lam=0.0, steps=base.steps + base.finetune_steps, finetune_steps=0)
    return base


# ---------------------------------------------------------------- onnxruntime measurement


def cpu_session(path: Path, threads: int = 1):
    """onnxruntime CPU at ORT_ENABLE_ALL with runtime_checks' safe options for the model's known traps."""
    from runtime_checks.graph import load_model
    from runtime_checks.sessions import make_session, plan_session, resolve_providers

    info = load_model(path)
    provider = resolve_providers(["cpu"])[0][0]
    return make_session(info, provider, "all", plan_session(info), threads)


def onnx_metrics(path: Path, task: str, x_test, y_test, x_pres, y_pres) -> dict[str, float]:
    """Test and preservation metrics of the .onnx file in onnxruntime CPU."""
    from runtime_checks.sessions import run_batched

    sess = cpu_session(path)
    out: dict[str, float] = {"file_bytes": path.stat().st_size}
    for split, x, y in (("test", x_test, y_test), ("preservation", x_pres, y_pres)):
        logits = run_batched(sess, np.ascontiguousarray(x), 256)[0]
        if task == "language_model":
            from runtime_checks.language_model import mean_loss

            loss = mean_loss(logits, y)
            out[f"{split}_loss"] = loss
            out[f"{split}_perplexity"] = float(np.exp(loss))
        else:
            out[f"{split}_accuracy"] = float((logits.argmax(1) == y).mean())
    return out


def onnx_weight_bits(path: Path) -> dict[str, int]:
    """Bits of the weights as the file stores them: integer initializers behind DequantizeLinear, MatMulNBits'
    packed B, and float initializers read directly by Conv/Gemm/MatMul/Gather (biases and scales not
    counted)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    consumers: dict[str, list] = {}
    for n in g.node:
        for i, name in enumerate(n.input):
            consumers.setdefault(name, []).append((n, i))
    weight_use = {"Conv": 1, "Gemm": 1, "MatMul": 1, "Gather": 0}
    int_bits = {onnx.TensorProto.INT8: 8, onnx.TensorProto.UINT8: 8, onnx.TensorProto.INT4: 4,
                onnx.TensorProto.UINT4: 4}
    if hasattr(onnx.TensorProto, "INT2"):
        int_bits.update({onnx.TensorProto.INT2: 2, onnx.TensorProto.UINT2: 2})
    total = quantized = counted = 0
    for n in g.node:
        if n.op_type == "DequantizeLinear" and n.input[0] in inits:
            t = inits[n.input[0]]
            users = consumers.get(n.output[0], [])
            if any(weight_use.get(u.op_type) == i or (u.op_type == "MatMul" and i == 0) for u, i in users):
                numel = int(np.prod(t.dims))
                total += int_bits.get(t.data_type, 32) * numel
                quantized += numel
                counted += numel
        elif n.op_type == "MatMulNBits":
            attrs = {a.name: a.i for a in n.attribute}
            numel = attrs["K"] * attrs["N"]
            total += attrs["bits"] * numel
            quantized += numel
            counted += numel
        elif n.op_type in weight_use and len(n.input) > weight_use[n.op_type]:
            name = n.input[weight_use[n.op_type]]
            if name in inits and inits[name].data_type == onnx.TensorProto.FLOAT:
                numel = int(numpy_helper.to_array(inits[name]).size)
                total += 32 * numel
                counted += numel
    return {"weight_bits": total, "weights_quantized": quantized, "weights_counted": counted}


# ---------------------------------------------------------------- the units


def _timed(fn, *args, **kwargs):
    t0, c0 = time.perf_counter(), time.process_time()
    result = fn(*args, **kwargs)
    return result, round(time.perf_counter() - t0, 2), round(time.process_time() - c0, 2)


def run_unit(suite: str, unit: Unit, default_gamma: float) -> dict[str, Any]:
    """Run one unit in this process (one torch thread); return its JSON record."""
    import logging

    import torch

    torch.set_num_threads(1)
    logging.disable(logging.WARNING)  # the exporter's and quantizer's INFO chatter; errors still show
    out = workdir(suite, unit)
    out.mkdir(parents=True, exist_ok=True)
    rec: dict[str, Any] = {"key": unit.key, "dataset": unit.dataset, "seed": unit.seed, "method": unit.method,
                           "gamma": unit.gamma, "bits": unit.bits, "lam": unit.lam, "pid": os.getpid()}
    if unit.method == "float":
        rec.update(_run_float(suite, unit, out))
    elif unit.method == "ptq":
        rec.update(_run_ptq(suite, unit, out, default_gamma))
    else:
        rec.update(run_compress(suite, unit, out))
    return rec


def _float_module(suite: str, unit: Unit):
    import torch

    model = _model(unit.dataset)
    path = workdir(suite, Unit(unit.dataset, unit.seed, "float")) / "float.pt"
    model.load_state_dict(torch.load(path, weights_only=True))
    return model.eval()


def _run_float(suite: str, unit: Unit, out: Path) -> dict[str, Any]:
    import onnx_ir as ir
    import torch

    from converters._torch_export import export_float
    from sgsc_export._io import write_atomic
    from sgsc_export.train.compress import train_reference

    data = data_for(suite, unit.dataset)
    cfg = config_for(unit)
    model = _model(unit.dataset)
    _, wall, cpu = _timed(train_reference, model, data, cfg)
    model.eval()
    buf = __import__("io").BytesIO()
    torch.save(model.state_dict(), buf)
    write_atomic(out / "float.pt", buf.getvalue())
    example = torch.as_tensor(np.ascontiguousarray(data.x_test[:2]))
    proto = ir.serde.serialize_model(export_float(model, example, OPSET_FLOAT))
    write_atomic(out / "float.onnx", proto.SerializeToString())
    n_weights = sum(m.weight.numel() for m in model.modules()
                    if isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Linear, torch.nn.Embedding)))
    return {"seconds": wall, "cpu_seconds": cpu, "float_epochs": cfg.float_epochs, "weights": n_weights}


def run_compress(suite: str, unit: Unit, out: Path, cfg=None) -> dict[str, Any]:
    """Compress the float reference of ``suite`` by ``unit``'s method (or ``cfg``), export, measure."""
    from converters import export
    from sgsc_export import compress

    data = data_for(suite, unit.dataset)
    cfg = cfg or config_for(unit)
    model = _float_module(suite, unit)
    art, wall, cpu = _timed(compress, model, data, cfg, pretrained=True, out_dir=out / "artifact",
                            model_spec=_spec(unit.dataset))
    m = art.manifest
    rec: dict[str, Any] = {
        "seconds": wall, "cpu_seconds": cpu, "config": cfg.to_dict(),
        "stored_bits": m["totals"]["quantized_bits"], "fp32_bits": m["totals"]["fp32_bits"],
        "ratio": m["totals"]["ratio"], "restores": len(m["restores"]),
        "channels": {x["name"]: [x["channels_kept"], x["channels_before"]] for x in m["layers"]},
        "pytorch": m["metrics"]["compressed"], "onnx": {},
    }
    ev = art.eval
    for profile in PROFILES[unit.method]:
        path = out / f"{profile}.onnx"
        export(art, path, profile)
        rec["onnx"][profile] = onnx_metrics(path, m["model"]["task"], ev["x_test"], ev["y_test"],
                                            ev["x_preservation"], ev["y_preservation"])
    return rec


class _Calibration:
    """onnxruntime's CalibrationDataReader over the preservation set, in batches of 32."""

    def __init__(self, x: np.ndarray, name: str = "input", batch: int = 32) -> None:
        self._batches = iter([{name: np.ascontiguousarray(x[s : s + batch])}
                              for s in range(0, len(x), batch)])

    def get_next(self):
        return next(self._batches, None)

    def rewind(self) -> None:  # pragma: no cover - not used by MinMax
        pass


def _run_ptq(suite: str, unit: Unit, out: Path, default_gamma: float) -> dict[str, Any]:
    import logging

    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    from sgsc_export._io import write_atomic
    from sgsc_export.artifact.compressed import CompressedModel

    ref_dir = workdir(suite, Unit(unit.dataset, unit.seed, "float"))
    art = CompressedModel.load(workdir(suite, Unit(unit.dataset, unit.seed, "sgsc", gamma=default_gamma))
                               / "artifact")
    ev = art.eval
    task = art.manifest["model"]["task"]
    float_onnx = ref_dir / "float.onnx"
    args = (task, ev["x_test"], ev["y_test"], ev["x_preservation"], ev["y_preservation"])
    rec: dict[str, Any] = {"onnx": {"float": {**onnx_metrics(float_onnx, *args),
                                              **onnx_weight_bits(float_onnx)}},
                           "seconds": {}, "cpu_seconds": {}}

    int8 = out / "ptq-int8.onnx"
    tmp = out / "ptq-int8.tmp.onnx"
    _, wall, cpu = _timed(quantize_static, str(float_onnx), str(tmp), _Calibration(ev["x_preservation"]),
                          quant_format=QuantFormat.QDQ, per_channel=True, weight_type=QuantType.QInt8,
                          activation_type=QuantType.QUInt8, calibrate_method=CalibrationMethod.MinMax)
    os.replace(tmp, int8)
    rec["seconds"]["ptq-int8"], rec["cpu_seconds"]["ptq-int8"] = wall, cpu
    rec["onnx"]["ptq-int8"] = {**onnx_metrics(int8, *args), **onnx_weight_bits(int8)}

    def w4():
        q = MatMulNBitsQuantizer(onnx.load(str(float_onnx)), bits=4, block_size=32, is_symmetric=True,
                                 op_types_to_quantize=("MatMul", "Gemm"))
        q.process()
        return q.model.model

    model, wall, cpu = _timed(w4)
    logging.disable(logging.WARNING)  # MatMulNBitsQuantizer sets the root logger to INFO
    n4 = sum(n.op_type == "MatMulNBits" for n in model.graph.node)
    rec["ptq_w4_layers"] = n4
    if n4:
        path = out / "ptq-w4.onnx"
        write_atomic(path, model.SerializeToString())
        rec["seconds"]["ptq-w4"], rec["cpu_seconds"]["ptq-w4"] = wall, cpu
        rec["onnx"]["ptq-w4"] = {**onnx_metrics(path, *args), **onnx_weight_bits(path)}
    return rec
