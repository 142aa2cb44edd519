"""Fixtures: one real toy-size artifact (digits, a few steps) for the session, its exports, and a synthetic
artifact-like object for shapes the toy run does not produce (INT2 / INT4 layers, a MatMul weight)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

PROFILES = ("portable", "compact", "ort-int8")


@pytest.fixture(scope="session")
def artifact_dir(tmp_path_factory) -> Path:
    """A real artifact from ``sgsc compress`` at toy size: some channels removed, some masked (about 5 s)."""
    from click.testing import CliRunner

    from sgsc_export.cli import main

    out = tmp_path_factory.mktemp("artifact") / "digits"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = CliRunner().invoke(
            main,
            [
                "compress",
                "--dataset",
                "digits",
                "--out",
                str(out),
                "--steps",
                "30",
                "--float-epochs",
                "2",
                "--gamma",
                "0.3",
                "--init-bits",
                "2",
                "--quiet",
                "--max-drop",  # a toy run is not meant to meet the default accuracy target (exit 1)
                "100",
            ],
        )
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="session")
def exported(artifact_dir, tmp_path_factory) -> dict:
    """profile → ExportResult, each profile exported once for the session."""
    from converters import export

    d = tmp_path_factory.mktemp("onnx")
    return {p: export(artifact_dir, d / f"{p}.onnx", profile=p) for p in PROFILES}


@pytest.fixture(scope="session")
def ort_int8_every(artifact_dir, tmp_path_factory):
    """The artifact in ``ort-int8`` with every activation quantised (targets that accept any result): the
    layout the kernel rules are about. At the default targets this barely trained toy keeps most activations
    float (tests/converters/test_export.py::test_ort_int8_keeps_the_gate_at_the_defaults)."""
    from converters import export
    from tests.converters.passes.toy import EVERY_ACTIVATION

    path = tmp_path_factory.mktemp("onnx_every") / "ort-int8.onnx"
    return export(artifact_dir, path, profile="ort-int8", qdq_targets=EVERY_ACTIVATION)


@dataclass
class FakeCompressed:
    """Duck-types CompressedModel: what ``converters.export`` reads from it."""

    module: nn.Module
    manifest: dict
    quant: dict
    eval: dict = field(default_factory=dict)

    def to_module(self) -> nn.Module:
        return self.module

    def example_input(self, batch: int = 1) -> torch.Tensor:
        return torch.zeros([batch] + list(self.manifest["model"]["input_shape"][1:]))


class _Seq(nn.Module):
    """Conv → Linear on [B, T, F] (exported as MatMul with a transposed weight) → mean."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(3, 6, 3, padding=1)
        self.fc = nn.Linear(6, 5)
        self.head = nn.Linear(5, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(x)).transpose(1, 2)
        return self.head(torch.relu(self.fc(h))).mean(1)


def make_fake(max_bits: int, seed: int = 0) -> FakeCompressed:
    """A model whose quantised layers hold random integers of at most ``max_bits`` bits (one zero-bit
    channel)."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    module = _Seq().eval()
    quant, layers = {}, []
    for name in ("conv", "fc", "head"):
        w = module.get_submodule(name).weight
        c = w.shape[0]
        bits = rng.integers(1, max_bits + 1, c).astype(np.uint8)
        bits[0] = 0
        hi = np.where(bits == 0, 0, (1 << np.maximum(bits.astype(int) - 1, 0)) - 1)
        lo = np.where(bits == 0, 0, -(1 << np.maximum(bits.astype(int) - 1, 0)))
        bshape = (-1,) + (1,) * (w.ndim - 1)
        ints = rng.integers(lo.reshape(bshape), hi.reshape(bshape) + 1, size=tuple(w.shape)).astype(np.int8)
        scale = np.exp2(rng.integers(-6, -1, c)).astype(np.float32)
        with torch.no_grad():
            w.copy_(torch.from_numpy(ints.astype(np.float32) * scale.reshape(bshape)))
        quant.update(
            {
                f"{name}.weight_int": torch.from_numpy(ints),
                f"{name}.scale": torch.from_numpy(scale),
                f"{name}.bits": torch.from_numpy(bits),
            }
        )
        layers.append(
            {
                "name": name,
                "kind": type(module.get_submodule(name)).__name__,
                "weight_shape": list(w.shape),
                "bits": bits.tolist(),
            }
        )
    x = rng.standard_normal((32, 3, 7)).astype(np.float32)
    manifest = {
        "format": "sgsc-artifact",
        "format_version": 1,
        "layers": layers,
        "model": {"input_shape": [1, 3, 7], "task": "classification"},
        "preservation": {"sha256": "0" * 64},
    }
    json.dumps(manifest)
    return FakeCompressed(module, manifest, quant, {"x_preservation": x})


@pytest.fixture(scope="session")
def fake():
    """``fake(max_bits)`` → a synthetic artifact-like object (see ``make_fake``)."""
    return make_fake
