"""Exact round trips of every packing: widths 1–8, odd lengths, ONNX containers checked against onnx
itself."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import numpy_helper

from converters import packing


@settings(max_examples=60, deadline=None)
@given(bits=st.integers(1, 8), data=st.data())
def test_pack_unpack_round_trip(bits, data):
    n = data.draw(st.integers(0, 67))
    values = np.array(
        data.draw(st.lists(st.integers(0, (1 << bits) - 1), min_size=n, max_size=n)), dtype=np.int64
    )
    packed = packing.pack(values, bits)
    assert len(packed) == (n * bits + 7) // 8
    assert np.array_equal(packing.unpack(packed, bits, n), values)


@pytest.mark.parametrize("container", ["INT2", "INT4", "INT8"])
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_container_round_trip_matches_onnx(container, data):
    width = packing.CONTAINERS[container][0]
    lo, hi = packing.signed_range(width)
    n = data.draw(st.integers(1, 41))
    values = np.array(data.draw(st.lists(st.integers(lo, hi), min_size=n, max_size=n)), dtype=np.int8)
    raw = packing.pack_container(values, container)
    assert np.array_equal(packing.unpack_container(raw, container, n), values)
    proto = onnx.helper.make_tensor("w", getattr(onnx.TensorProto, container), [n], raw, raw=True)
    assert np.array_equal(
        numpy_helper.to_array(proto).astype(np.int8), values
    )  # onnx reads our bytes the same


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_pack_channels_round_trip_exact_size(data):
    c = data.draw(st.integers(1, 7))
    k = data.draw(st.integers(1, 13))
    bits = np.array(data.draw(st.lists(st.integers(0, 8), min_size=c, max_size=c)), dtype=np.uint8)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    lo = np.array([packing.signed_range(int(b))[0] for b in bits])[:, None]
    hi = np.array([packing.signed_range(int(b))[1] for b in bits])[:, None]
    values = rng.integers(lo, hi + 1, size=(c, k)).astype(np.int8)
    blob = packing.pack_channels(values, bits)
    assert len(blob) == (int(bits.astype(int).sum()) * k + 7) // 8
    assert np.array_equal(packing.unpack_channels(blob, bits, (c, k)), values)


def test_required_bits_and_containers():
    assert packing.required_bits(np.array([0, 0])) == 0
    assert packing.required_bits(np.array([-1, 0])) == 1
    assert packing.required_bits(np.array([1])) == 2
    assert packing.required_bits(np.array([-128, 127])) == 8
    assert [packing.container_for(b) for b in range(9)] == ["INT2"] * 3 + ["INT4"] * 2 + ["INT8"] * 4


def test_values_out_of_range_are_rejected():
    with pytest.raises(ValueError, match="do not fit"):
        packing.pack_container(np.array([2]), "INT2")
    with pytest.raises(ValueError, match="do not fit"):
        packing.pack_channels(np.array([[1, 0]]), np.array([1]))
    with pytest.raises(ValueError, match="out of range"):
        packing.pack(np.array([1]), 9)
