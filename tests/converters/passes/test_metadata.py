"""add_metadata: the sgsc.* keys that make the file self-describing."""

from __future__ import annotations

import json

import pytest

from converters.passes import add_metadata, locate_weights, weights_to_dq
from converters.passes.metadata import encode_layers, layer_records
from sgsc_export.errors import ExportError
from tests.converters.passes.toy import assert_outputs_kept, toy_context


def test_writes_every_key_and_keeps_the_outputs():
    ctx = toy_context()
    locate_weights(ctx)
    weights_to_dq(ctx)
    ctx.fused = {"conv": "float", "fc": "QGemm"}
    assert_outputs_kept(ctx, add_metadata)  # exact: metadata only
    props = ctx.model.metadata_props
    assert props["sgsc.profile"] == "portable" and props["sgsc.opset"] == "21"
    assert [r["name"] for r in layer_records(props["sgsc.layers"])] == ["conv", "fc"]
    assert props["sgsc.fused"] == '{"conv":"float","fc":"QGemm"}'  # canonical JSON
    assert props["sgsc.task"] == "classification" and props["sgsc.preservation_sha256"] == "0" * 64


def test_requires_a_container_for_every_layer():
    ctx = toy_context()
    locate_weights(ctx)
    with pytest.raises(ExportError, match=r"^pass add_metadata: requires every layer to have a container "
                                          r"\(a weights pass ran\); 'conv' has none"):
        add_metadata(ctx)


def test_layers_are_stored_by_column_and_read_back_as_records():
    records = [
        {"name": "conv", "weight": "a", "bits_histogram": {"0": 2, "3": 5}, "learned_bits": 45,
         "fp32_bytes": 252, "stored_bytes": 20, "container": "packed"},
        {"name": "fc", "weight": "b", "bits_histogram": {"8": 10}, "learned_bits": 800,
         "fp32_bytes": 400, "stored_bytes": 100, "container": "packed"},
    ]
    value = encode_layers(records)
    assert json.loads(value)["container"] == "packed"  # shared by every layer: stored once
    assert json.loads(value)["bits_histogram"] == [[2, 0, 0, 5], [0, 0, 0, 0, 0, 0, 0, 0, 10]]
    back = layer_records(value)
    assert back == [{k: v for k, v in r.items() if k != "fp32_bytes"} for r in records]
    assert layer_records(json.dumps(records)) == records  # a file written before the columns
    for bad in ('{"layers": 2, "name": ["a"]}', '{"layers": 99999999}', '"x"', '[1]',
                '{"layers": 1, "bits_histogram": [3]}'):
        with pytest.raises(ValueError):
            layer_records(bad)
