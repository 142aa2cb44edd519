"""Shared fixtures: a real toy-size compression run on digits, made once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
MNIST_DIR = SHARED / "mnist-t10k"
NAMES_DIR = SHARED / "names"

TOY = dict(steps=150, float_epochs=3, restore_every=25, checkpoint_every=50, finetune_steps=20, gamma=0.3, seed=0)


@pytest.fixture(scope="session")
def digits_split():
    from sgsc_export import load_dataset

    return load_dataset("digits")


@pytest.fixture(scope="session")
def digits_artifact(tmp_path_factory, digits_split) -> Path:
    """Directory of a real `compress` run on digits at toy size."""
    from sgsc_export import CompressConfig, compress
    from sgsc_export.models import digits_cnn

    out = tmp_path_factory.mktemp("digits_artifact")
    compress(digits_cnn(), digits_split, CompressConfig(**TOY), out_dir=out,
             model_spec={"factory": "sgsc_export.models:digits_cnn", "kwargs": {"num_classes": 10}})
    return out
