"""Benchmark: `validate` on 10,000 samples, CPU, two optimisation levels (disabled, all), 2 threads.

The acceptance bar of issue 4 is < 30 s on 2 cores. The model is an MNIST-sized CNN in the form the converters
emit (int8 weights → DequantizeLinear → Conv / MatMul, per-channel power-of-two scales) with random weights
and random 1×28×28 inputs, labels and references taken from the unoptimised model. Writes raw numbers to
benchmarks/results/validate_speed.json. Run: `taskset -c 0,1 .venv/bin/python benchmarks/validate_speed.py`.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from runtime_checks import EvalData, preservation_sha256, validate

N_TEST, N_PRES, THREADS = 10_000, 500, 2


def _dq_layer(rng, name: str, shape: tuple, axis: int) -> tuple[list, list]:
    channels = shape[axis]
    q = rng.integers(-128, 128, size=shape).astype(np.int8)
    scale = (2.0 ** -rng.integers(7, 10, channels)).astype(np.float32)
    inits = [nh.from_array(q, f"{name}.weight_q"), nh.from_array(scale, f"{name}.scale")]
    return inits, [h.make_node("DequantizeLinear", [f"{name}.weight_q", f"{name}.scale"], [f"{name}.weight"],
                               axis=axis, name=f"{name}.dq")]


def mnist_cnn(seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    inits, nodes = [], []
    for name, shape, axis in (("conv1", (16, 1, 3, 3), 0), ("conv2", (32, 16, 3, 3), 0),
                              ("fc1", (800, 128), 1),
                              ("fc2", (128, 10), 1)):
        i, n = _dq_layer(rng, name, shape, axis)
        inits += i + [nh.from_array(np.zeros(shape[axis], np.float32), f"{name}.bias")]
        nodes += n
    inits.append(nh.from_array(np.array([-1, 800], np.int64), "shape"))
    nodes += [h.make_node("Conv", ["x", "conv1.weight", "conv1.bias"], ["c1"], name="conv1"),
              h.make_node("Relu", ["c1"], ["r1"]), h.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2],
                                                                strides=[2, 2]),
              h.make_node("Conv", ["p1", "conv2.weight", "conv2.bias"], ["c2"], name="conv2"),
              h.make_node("Relu", ["c2"], ["r2"]), h.make_node("MaxPool", ["r2"], ["p2"], kernel_shape=[2, 2],
                                                                strides=[2, 2]),
              h.make_node("Reshape", ["p2", "shape"], ["flat"]),
              h.make_node("MatMul", ["flat", "fc1.weight"], ["m1"], name="fc1"),
              h.make_node("Add", ["m1", "fc1.bias"], ["a1"]),
              h.make_node("Relu", ["a1"], ["r3"]),
              h.make_node("MatMul", ["r3", "fc2.weight"], ["m2"], name="fc2"),
              h.make_node("Add", ["m2", "fc2.bias"], ["logits"])]
    graph = h.make_graph(nodes, "mnist_cnn", [h.make_tensor_value_info("x", T.FLOAT, ["N", 1, 28, 28])],
                         [h.make_tensor_value_info("logits", T.FLOAT, ["N", 10])], inits)
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 21)])
    model.ir_version = 10
    return model


def main() -> None:
    model = mnist_cnn()
    rng = np.random.default_rng(1)
    x = rng.random((N_TEST + N_PRES, 1, 28, 28), dtype=np.float32)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    logits = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(
        None, {"x": x})[0]
    y = logits.argmax(1).astype(np.int64)
    data = EvalData(x[:N_TEST], y[:N_TEST], x[N_TEST:], y[N_TEST:], ref_test=logits[:N_TEST],
                    ref_preservation=logits[N_TEST:], float_test_accuracy=1.0,
                    float_preservation_accuracy=1.0,
                    source="benchmark:random")
    model.metadata_props.append(onnx.StringStringEntryProto(key="sgsc.preservation_sha256",
                                                            value=preservation_sha256(x[N_TEST:],
                                                                                      y[N_TEST:])))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mnist_cnn.onnx"
        onnx.save(model, path)
        runs, latency = {}, None
        for name, kwargs in (("validate_no_latency", {"latency": False}), ("validate_with_latency", {}),
                             ("validate_with_layers", {"latency": False, "layers": True})):
            start = time.perf_counter()
            report = validate(path, data, opt_levels=("disabled", "all"), threads=THREADS, **kwargs)
            runs[name] = {"seconds": round(time.perf_counter() - start, 3), "status": report.status,
                          "agreement_test": report.providers["cpu"].summary("test").parity.agreement}
            latency = report.to_dict()["latency_ms"].get("cpu") or latency
            print(f"{name}: {runs[name]['seconds']:.2f} s, {report.status}")
    result = {"benchmark": "validate_speed", "n_test": N_TEST, "n_preservation": N_PRES,
              "opt_levels": ["disabled", "all"], "threads": THREADS, "providers": ["cpu"], "runs": runs,
              "latency_ms_cpu_all": latency,
              "cpu_affinity": len(os.sched_getaffinity(0)), "cpu_count": os.cpu_count(),
              "machine": platform.machine(), "python": platform.python_version(),
              "onnxruntime": ort.__version__, "numpy": np.__version__, "bar_seconds": 30}
    out = ROOT / "benchmarks" / "results" / "validate_speed.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
