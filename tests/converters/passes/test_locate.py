"""locate_weights: each manifest layer's weight initializer is found (by name, or by value, transposed)."""

from __future__ import annotations

import pytest

from converters.passes import locate_weights
from sgsc_export.errors import ArtifactError, ExportError
from tests.converters.passes.toy import assert_outputs_kept, proto, toy_context


def test_finds_each_weight_by_name_or_transposed_by_value():
    ctx = toy_context()
    before = proto(ctx).SerializeToString()
    locate_weights(ctx)
    assert [(lw.name, lw.value.name, lw.axis) for lw in ctx.layers] == [("conv", "conv.weight", 0),
                                                                          ("fc", "fc.weight", 0)]
    ctx_mm = toy_context(matmul=True)
    locate_weights(ctx_mm)
    (mm,) = ctx_mm.layers
    assert (mm.value.name, mm.axis, mm.ints.shape) == ("mm_w_t", 1, (4, 3))
    assert proto(ctx).SerializeToString() == before  # it only reads the graph


def test_result_checks_and_computes_exactly_what_the_input_did():
    assert_outputs_kept(toy_context(), locate_weights)  # exact: the graph is unchanged


def test_requires_a_fresh_context_and_a_manifest_with_layers():
    ctx = toy_context()
    locate_weights(ctx)
    with pytest.raises(ExportError, match=r"^pass locate_weights: requires no layers located yet"):
        locate_weights(ctx)
    empty = toy_context()
    empty.manifest["layers"] = []
    with pytest.raises(
        ExportError, match=r"^pass locate_weights: requires a manifest with compressed layers"
    ):
        locate_weights(empty)


def test_a_weight_that_is_not_ints_times_scale_is_refused():
    ctx = toy_context()
    ctx.quant["fc.scale"] = ctx.quant["fc.scale"] * 2
    with pytest.raises(ArtifactError, match="layer 'fc': model.safetensors weight is not weight_int × scale"):
        locate_weights(ctx)
