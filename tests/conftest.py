"""Shared fixtures: a real toy-size compression run on digits, made once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
MNIST_DIR = SHARED / "mnist-t10k"
NAMES_DIR = SHARED / "names"

TOY = dict(steps=150, float_epochs=3, restore_every=25, checkpoint_every=50, finetune_steps=20, gamma=0.3,
           seed=0)


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


# -- the character-level language model (issue 5) ------------------------------------------------------------
LM_TOY = dict(steps=40, float_epochs=1, batch_size=64, restore_every=20, prune_every=20, checkpoint_every=100,
              preservation_size=30, gamma=0.5, init_bits=6.0, seed=0)


def names_subset(tmp_dir: Path, n: int = 1500) -> Path:
    """The first ``n`` names of the paper's data as a text file (a toy-size ``text:PATH`` data set)."""
    if not (NAMES_DIR / "names.txt").is_file():
        pytest.skip(f"the names data is not at {NAMES_DIR} "
                    "(../shared/data/names); language-model runs need it")
    path = tmp_dir / "names_subset.txt"
    path.write_text("\n".join((NAMES_DIR / "names.txt").read_text().splitlines()[:n]) + "\n")
    return path


@pytest.fixture(scope="session")
def lm_artifact(tmp_path_factory) -> Path:
    """Directory of a real `compress` run of the char transformer on 1,500 names at toy size (~20 s)."""
    import torch

    from sgsc_export import CompressConfig, compress, load_dataset
    from sgsc_export.models import default_kwargs
    from sgsc_export.models.charlm import char_transformer

    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("lm_artifact")
    data = load_dataset(f"text:{names_subset(tmp)}")
    out = tmp / "run"
    kwargs = default_kwargs(data)
    compress(char_transformer(**kwargs), data, CompressConfig(**LM_TOY), out_dir=out,
             model_spec={"factory": "sgsc_export.charlm:char_transformer", "kwargs": kwargs})
    return out


@pytest.fixture(scope="session")
def lm_portable(lm_artifact, tmp_path_factory) -> Path:
    """The toy language model exported in the ``portable`` profile, once per session."""
    from converters import export

    path = tmp_path_factory.mktemp("lm_portable") / "lm.onnx"
    export(lm_artifact, path, "portable")
    return path
