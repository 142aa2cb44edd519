"""A real toy-size compression of the char transformer: manifest, metrics, determinism of the metrics'
shape."""

import json

from sgsc_export import CompressedModel


def test_lm_manifest_records_task_metrics_and_every_layer(lm_artifact):
    m = json.loads((lm_artifact / "manifest.json").read_text())
    assert m["model"]["task"] == "language_model" and m["model"]["input_dtype"] == "int64"
    assert m["model"]["input_shape"] == [1, 32]
    kinds = {layer["name"]: layer["kind"] for layer in m["layers"]}
    assert kinds["tok"] == "Embedding" and kinds["blocks.0.attn.q"] == "Linear" and kinds["head"] == "Linear"
    assert len(kinds) == 2 + 4 * 6 + 1
    assert all("ln" in name for name in m["float_layers"])
    for side in ("float", "compressed"):
        for split in ("test", "preservation"):
            got = m["metrics"][side]
            assert {f"{split}_loss", f"{split}_perplexity", f"{split}_accuracy"} <= set(got)
    assert m["preservation"]["criteria"] == ["loss", "uncertainty", "diversity", "file"]
    assert m["preservation"]["size"] == 30
    assert m["language_model"]["vocab"][0] == "\n" and m["language_model"]["context"] == 32
    assert m["totals"]["ratio"] < 0.25  # started at 6 bits (0.1875) and γ pushed down


def test_lm_artifact_round_trips_and_reproduces_its_logits(lm_artifact):
    import numpy as np
    import torch

    art = CompressedModel.load(lm_artifact)
    module = art.to_module()
    x = torch.as_tensor(art.eval["x_test"][:64])
    with torch.no_grad():
        out = module(x).numpy()
    assert np.allclose(out, art.eval["logits_test"][:64], atol=1e-5)
    assert art.example_input(2).dtype == torch.int64
