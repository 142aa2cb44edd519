"""What a user does before SGSC, and the baseline it is measured against:

- ``train_float``: the model's float weights trained in plain PyTorch (Adam, cross-entropy, mini-batches of
  64, a few epochs, fixed seed), saved with ``torch.save(model.state_dict())``;
- ``export_float_onnx``: the float ONNX, by sgsc's own exporter (``torch.onnx.export(dynamo=True)``,
  reproducible metadata), opset 21 as in ``benchmarks.units``;
- ``ptq_int8``: onnxruntime's ``quantize_static`` of that file (QDQ, per-channel INT8 weights, UINT8
  activations, MinMax calibration on 256 training samples chosen with a fixed seed);
- ``onnx_accuracy``: test accuracy of an ``.onnx`` in onnxruntime CPU (``benchmarks.units.cpu_session``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

EPOCHS = {"digits": 20, "mnist": 5}  # enough for every zoo model to converge roughly; not tuned per model
BATCH = 64
LR = 1e-3
CALIBRATION = 256
OPSET = 21


def train_float(model, data: dict[str, np.ndarray], epochs: int, seed: int = 0) -> float:
    """Train ``model`` in place; return the wall seconds of the training loop."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    x = torch.as_tensor(data["x_train"])
    y = torch.as_tensor(data["y_train"])
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for s in range(0, len(x), BATCH):
            idx = order[s : s + BATCH]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    return time.perf_counter() - t0


def torch_accuracy(model, x: np.ndarray, y: np.ndarray) -> float:
    import torch

    with torch.no_grad():
        pred = torch.cat([model(torch.as_tensor(x[s : s + 256])).argmax(1) for s in range(0, len(x), 256)])
    return float((pred.numpy() == y).mean())


def export_float_onnx(model, example: np.ndarray, path: Path) -> None:
    import onnx_ir as ir
    import torch

    from converters._torch_export import export_float

    proto = ir.serde.serialize_model(export_float(model.eval(), torch.as_tensor(example), OPSET))
    _write(path, proto.SerializeToString())


def onnx_accuracy(path: Path, x: np.ndarray, y: np.ndarray) -> float:
    from benchmarks.units import cpu_session
    from runtime_checks.sessions import run_batched

    logits = run_batched(cpu_session(path), np.ascontiguousarray(x), 256)[0]
    return float((logits.argmax(1) == y).mean())


class _Calibration:
    """onnxruntime's CalibrationDataReader over ``x`` in batches of 32."""

    def __init__(self, x: np.ndarray, batch: int = 32) -> None:
        self._batches = iter([{"input": np.ascontiguousarray(x[s : s + batch])}
                              for s in range(0, len(x), batch)])

    def get_next(self):
        return next(self._batches, None)


def calibration_samples(x_train: np.ndarray, n: int = CALIBRATION, seed: int = 0) -> np.ndarray:
    idx = np.random.default_rng(seed).choice(len(x_train), size=min(n, len(x_train)), replace=False)
    return x_train[np.sort(idx)]


def ptq_int8(float_onnx: Path, out: Path, x_calib: np.ndarray) -> float:
    """onnxruntime PTQ INT8 (QDQ, per channel) of ``float_onnx`` into ``out``; return its wall seconds."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    tmp = out.with_name(f".{out.stem}.{os.getpid()}.tmp.onnx")
    t0 = time.perf_counter()
    quantize_static(str(float_onnx), str(tmp), _Calibration(x_calib), quant_format=QuantFormat.QDQ,
                    per_channel=True, weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8,
                    calibrate_method=CalibrationMethod.MinMax)
    os.replace(tmp, out)
    return time.perf_counter() - t0


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
