"""add_metadata: the sgsc.* keys that make the file self-describing."""

from __future__ import annotations

import json

import pytest

from converters.passes import add_metadata, locate_weights, weights_to_dq
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
    assert [r["name"] for r in json.loads(props["sgsc.layers"])] == ["conv", "fc"]
    assert props["sgsc.fused"] == '{"conv":"float","fc":"QGemm"}'  # canonical JSON
    assert props["sgsc.task"] == "classification" and props["sgsc.preservation_sha256"] == "0" * 64


def test_requires_a_container_for_every_layer():
    ctx = toy_context()
    locate_weights(ctx)
    with pytest.raises(ExportError, match=r"^pass add_metadata: requires every layer to have a container "
                                          r"\(a weights pass ran\); 'conv' has none"):
        add_metadata(ctx)
