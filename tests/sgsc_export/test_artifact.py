"""A real toy-size compression run, read back: the artifact is the contract with the converters."""

import json
import shutil

import numpy as np
import pytest
import torch

from sgsc_export import ArtifactError, CompressedModel
from sgsc_export.train.freeze import to_half
from sgsc_export.train.loop import predict


def test_manifest_has_the_contract_keys(digits_artifact, digits_split):
    m = json.loads((digits_artifact / "manifest.json").read_text())
    assert [layer["kind"] for layer in m["layers"]] == ["Conv2d", "Conv2d", "Conv2d", "Linear"]
    for layer in m["layers"]:
        keys = {"name", "kind", "weight_shape", "bits", "exponents", "channels_before", "channels_kept"}
        assert keys <= set(layer)
        assert len(layer["bits"]) == layer["weight_shape"][0] == layer["channels_kept"]
        assert all(0 <= b <= 8 for b in layer["bits"])
    t = m["totals"]
    assert t["fp32_bits"] == 32 * t["weights_start"]
    assert t["ratio"] == pytest.approx(t["quantized_bits"] / t["fp32_bits"])
    assert t["quantized_bits"] == sum(layer["stored_bits"] for layer in m["layers"])
    assert set(m["metrics"]) == {"float", "compressed"}
    assert {"test_accuracy", "preservation_accuracy"} <= set(m["metrics"]["compressed"])
    d = m["dataset"]
    assert d["n_train"] + d["n_validation"] == len(digits_split.x_train) and d["n_validation"] == 143
    assert m["preservation"]["size"] == len(m["preservation"]["indices"]) == d["n_train"] // 10
    assert m["target"]["validation"] == {"n": 143, "seed": 0, "source": "held out"}
    assert m["target"]["unit"] == "pp"
    assert m["config"]["seed"] == m["seed"] == 0 and "torch" in m["versions"]
    assert m["folded_batchnorm"] == [["2", "3"]]


def test_preservation_set_is_training_data_with_aligned_labels(digits_artifact, digits_split):
    cm = CompressedModel.load(digits_artifact)
    idx = cm.preservation["indices"]
    assert idx.max() < len(digits_split.x_train)  # indices into the training split only
    np.testing.assert_array_equal(cm.eval["x_preservation"], digits_split.x_train[idx])
    np.testing.assert_array_equal(cm.eval["y_preservation"], digits_split.y_train[idx])
    np.testing.assert_array_equal(cm.preservation["labels"], digits_split.y_train[idx])
    # no test sample is in the preservation set
    test_rows = {x.tobytes() for x in digits_split.x_test}
    assert not any(x.tobytes() in test_rows for x in cm.eval["x_preservation"])


def test_weights_are_exactly_integers_times_scale(digits_artifact):
    cm = CompressedModel.load(digits_artifact)
    module = cm.to_module()
    params = dict(module.named_parameters())
    for layer in cm.layers:
        n = layer["name"]
        wi, scale = cm.quant[f"{n}.weight_int"], cm.quant[f"{n}.scale"]
        bits = cm.quant[f"{n}.bits"].to(torch.int64)
        shape = (-1,) + (1,) * (wi.dim() - 1)
        assert torch.equal(params[f"{n}.weight"], wi.float() * scale.reshape(shape))
        live = wi.reshape(len(scale), -1).ne(0).any(1)  # a row of zeros takes the others' median scale
        assert torch.equal(scale[live], torch.exp2(cm.quant[f"{n}.exponent"])[live].half().float())
        lo = -(2 ** (bits - 1).clamp_min(0)).reshape(shape)
        hi = (2 ** (bits - 1).clamp_min(0) - 1).reshape(shape)
        flat = wi.to(torch.int64)
        dead = (bits == 0).reshape(shape)
        assert torch.all((flat >= lo) | dead) and torch.all((flat <= hi) | dead)
        assert torch.count_nonzero(flat * dead) == 0
        assert bits.tolist() == layer["bits"]


def test_every_layer_with_masked_channels_says_why_they_were_not_removed(digits_artifact):
    cm = CompressedModel.load(digits_artifact)
    for layer in cm.layers:
        assert (layer["masked_reason"] is None) == (layer["channels_masked"] == 0), layer["name"]
        assert layer["masked_reason"] is None or isinstance(layer["masked_reason"], str)


def test_float_parameters_are_stored_at_float16_precision(digits_artifact):
    cm = CompressedModel.load(digits_artifact)
    weights = {f"{layer['name']}.weight" for layer in cm.layers}
    floats = {k: v for k, v in cm.state.items() if v.is_floating_point() and k not in weights}
    assert floats  # the biases at least
    for k, v in floats.items():
        assert torch.equal(v, v.half().float()), k
    for layer in cm.layers:
        scale = cm.quant[f"{layer['name']}.scale"]
        assert torch.equal(scale, scale.half().float())


def test_to_half_rounds_only_what_float16_holds_in_its_normal_range():
    t = torch.tensor([0.1, -3.0, 0.0, 1000.0])
    assert torch.equal(to_half(t), t.half().float()) and not torch.equal(to_half(t), t)
    for out_of_range in ([0.1, 1e-6], [0.1, 7e4]):  # a tiny variance, a huge value: the tensor as it is
        t = torch.tensor(out_of_range)
        assert to_half(t) is t
    tiny = torch.tensor([0.1, 3e-6])  # added to an activation, a subnormal's 2^-25 step is nothing
    assert torch.equal(to_half(tiny, additive=True), tiny.half().float()) and to_half(tiny) is tiny
    huge = torch.tensor([1.0, float("inf")])
    assert to_half(huge, additive=True) is huge
    i = torch.tensor([3, 4])
    assert to_half(i) is i


def test_rebuilt_module_reproduces_reference_logits(digits_artifact):
    cm = CompressedModel.load(digits_artifact)
    module = cm.to_module()
    logits = predict(module, cm.eval["x_test"])
    np.testing.assert_array_equal(logits, cm.eval["logits_test"])
    acc = float((logits.argmax(1) == cm.eval["y_test"]).mean())
    assert acc == cm.manifest["metrics"]["compressed"]["test_accuracy"]


def test_pruned_channels_are_physically_gone(digits_artifact):
    cm = CompressedModel.load(digits_artifact)
    m = cm.manifest
    assert sum(layer["channels_removed"] for layer in m["layers"]) > 0
    by = {layer["name"]: layer for layer in m["layers"]}
    for prod, link in m["links"].items():
        cons = by[link["consumer"]]
        assert cons["weight_shape"][1] == by[prod]["channels_kept"] * link["per_channel"]


def test_corrupted_or_incomplete_artifact_is_rejected(digits_artifact, tmp_path):
    bad = tmp_path / "a"
    shutil.copytree(digits_artifact, bad)
    with open(bad / "quant.safetensors", "r+b") as f:
        f.seek(200)
        f.write(b"\x01\x02")
    with pytest.raises(ArtifactError, match="does not match the manifest"):
        CompressedModel.load(bad)
    (bad / "manifest.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        CompressedModel.load(bad)
    (bad / "manifest.json").unlink()
    with pytest.raises(ArtifactError, match="no manifest.json"):
        CompressedModel.load(bad)
    with pytest.raises(ArtifactError, match="does not exist"):
        CompressedModel.load(tmp_path / "nope")
