"""check_opset (and required_opset): the finished graph has the opset its containers need."""

from __future__ import annotations

import numpy as np
import pytest

from converters.passes import check_opset, locate_weights, required_opset, weights_to_dq
from sgsc_export.errors import ExportError
from tests.converters.passes.toy import assert_outputs_kept, proto, toy_context


def test_required_opset_follows_the_widest_container():
    assert required_opset([np.array([3, 4]), np.array([8])], "portable") == 21
    assert required_opset([np.array([2, 1]), np.array([4])], "portable") == 25  # the 2-bit layer is INT2
    assert required_opset([np.array([2, 2])], "compact") == 21


def test_passes_a_graph_that_has_its_opset_and_changes_nothing():
    ctx = toy_context(max_bits=2, opset=25)
    locate_weights(ctx)
    weights_to_dq(ctx)
    before = proto(ctx).SerializeToString()
    assert_outputs_kept(ctx, check_opset)  # exact: it only reads the graph
    assert proto(ctx).SerializeToString() == before


def test_an_int2_container_below_opset_25_is_a_converter_bug():
    ctx = toy_context(max_bits=2, opset=21)
    locate_weights(ctx)
    weights_to_dq(ctx)
    with pytest.raises(ExportError, match="is INT2, which needs opset 25, but the graph has opset 21"):
        check_opset(ctx)


def test_requires_a_default_domain_opset_import():
    ctx = toy_context()
    ctx.model.opset_imports.pop("")
    with pytest.raises(ExportError, match=r"^pass check_opset: requires a default-domain opset import"):
        check_opset(ctx)
