"""Same inputs and seed → the same artifact; a run interrupted and resumed → the same artifact too."""

import json

import pytest

from sgsc_export import CompressConfig, ConfigError, compress
from sgsc_export.models import digits_cnn
from sgsc_export.train import compress as api

SPEC = {"factory": "sgsc_export.models:digits_cnn", "kwargs": {"num_classes": 10}}
SMALL = dict(steps=60, float_epochs=1, restore_every=10, checkpoint_every=30, prune_every=10, seed=5,
             gamma=1.0, init_bits=4.0, lr=1e-3)


def _files(d):
    return json.loads((d / "manifest.json").read_text())["files"]


def test_same_seed_same_artifact_and_resume_is_lossless(tmp_path, digits_split, monkeypatch):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    compress(digits_cnn(), digits_split, CompressConfig(**SMALL), out_dir=a, model_spec=SPEC)
    compress(digits_cnn(), digits_split, CompressConfig(**SMALL), out_dir=b, model_spec=SPEC)
    assert _files(a) == _files(b)

    real_save = api.save_checkpoint

    def save_then_interrupt(path, payload):
        real_save(path, payload)
        raise KeyboardInterrupt  # Ctrl-C right after the step-30 checkpoint

    monkeypatch.setattr(api, "save_checkpoint", save_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        compress(digits_cnn(), digits_split, CompressConfig(**SMALL), out_dir=c, model_spec=SPEC)
    assert not (c / "manifest.json").exists()  # no half-written artifact
    monkeypatch.setattr(api, "save_checkpoint", real_save)
    with pytest.raises(ConfigError, match="another configuration"):
        compress(digits_cnn(), digits_split, CompressConfig(**{**SMALL, "gamma": 0.5}), out_dir=c,
                 model_spec=SPEC, resume=True)
    compress(digits_cnn(), digits_split, CompressConfig(**SMALL), out_dir=c, model_spec=SPEC, resume=True)
    assert _files(c) == _files(a)
    # the whole artifact: no wall-clock time, same channel counts
    for name in ("manifest.json", "history.json"):
        assert (c / name).read_bytes() == (a / name).read_bytes() == (b / name).read_bytes()


def test_pruning_during_training_removes_channels_and_keeps_optimizer_state(tmp_path, digits_split):
    art = compress(digits_cnn(), digits_split, CompressConfig(**SMALL), model_spec=SPEC)
    during = art.history["removed_during_training"]
    assert sum(during.values()) > 0
    for layer in art.manifest["layers"]:
        assert layer["channels_removed"] >= during.get(layer["name"], 0)
        assert layer["channels_before"] - layer["channels_removed"] == layer["channels_kept"]


@pytest.mark.parametrize("bits", [4, 2])
def test_fixed_bits_is_uniform_qat(digits_split, bits):
    """learn_bits=False: every channel keeps init_bits exactly (only e learns); nothing is pruned."""
    cfg = CompressConfig(**{**SMALL, "learn_bits": False, "init_bits": float(bits), "lam": 0.0})
    art = compress(digits_cnn(), digits_split, cfg, model_spec=SPEC)
    for layer in art.manifest["layers"]:
        assert set(layer["bits"]) == {bits}
        assert layer["channels_kept"] == layer["channels_before"]
    assert art.manifest["totals"]["quantized_bits"] == bits * art.manifest["totals"]["weights_start"]
    assert art.manifest["metrics"]["compressed"]["test_accuracy"] > 0.5


def test_learn_bits_must_be_a_bool():
    with pytest.raises(ConfigError, match="learn_bits"):
        CompressConfig(learn_bits="no")
