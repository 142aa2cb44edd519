"""Integers ↔ packed bytes, for 1..8 bits, and the ONNX low-bit containers INT2 / INT4 / INT8.

Two layouts, both little-endian at the bit level (element i starts at bit ``i·w`` counted from the least
significant bit of byte 0):

* **Containers** (``pack_container``): ONNX's own layout for INT2 / INT4 ``raw_data`` — 4 or 2
two's-complement
  values a byte, the first element in the low bits, the last byte padded with zeros. INT8 is one value a byte.
* **Exact streams** (``pack_channels``): the ``compact`` profile's layout. Channel ``c`` of a weight ``[C,
K]`` is
  stored at its own learned width ``b_c`` (0..8), channel after channel, each value in ``b_c``-bit two's
  complement; a zero-bit channel takes no bits at all. The stream is ``ceil(Σ_c b_c·K / 8)`` bytes: no
  rounding up to a container.

Everything is exact integer arithmetic in numpy; the round trips are tested for every width and odd lengths.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "CONTAINERS",
    "channel_bits",
    "container_for",
    "pack",
    "pack_channels",
    "pack_container",
    "pack_widths",
    "required_bits",
    "signed_range",
    "unpack",
    "unpack_channels",
    "unpack_container",
]

#: ONNX container name → (bits a value, smallest opset whose DequantizeLinear takes it)
CONTAINERS: dict[str, tuple[int, int]] = {"INT2": (2, 25), "INT4": (4, 21), "INT8": (8, 13)}


def signed_range(bits: int) -> tuple[int, int]:
    """Inclusive range of a ``bits``-wide two's-complement integer; ``(0, 0)`` for zero bits."""
    if not 0 <= bits <= 8:
        raise ValueError(f"bits={bits} is out of range; allowed [0, 8]")
    if bits == 0:
        return 0, 0
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def required_bits(values: np.ndarray) -> int:
    """The smallest signed width (0..8) that holds every value (0 when all are zero)."""
    v = np.asarray(values)
    if v.size == 0:
        return 0
    lo, hi = int(v.min()), int(v.max())
    for b in range(9):
        rlo, rhi = signed_range(b)
        if rlo <= lo and hi <= rhi:
            return b
    raise ValueError(f"values in [{lo}, {hi}] do not fit 8 signed bits")


def channel_bits(values: np.ndarray, axis: int = 0) -> np.ndarray:
    """``required_bits`` of every slice along ``axis`` (uint8 ``[C]``)."""
    v = np.moveaxis(np.asarray(values), axis, 0)
    return np.array([required_bits(v[c]) for c in range(v.shape[0])], dtype=np.uint8)


def container_for(max_bits: int) -> str:
    """The smallest ONNX container that holds ``max_bits``-wide signed integers."""
    for name, (width, _) in CONTAINERS.items():
        if max_bits <= width:
            return name
    raise ValueError(f"max_bits={max_bits} is out of range; allowed [0, 8]")


def _check_fits(v: np.ndarray, bits: int) -> None:
    lo, hi = signed_range(bits)
    if v.size and (v.min() < lo or v.max() > hi):
        raise ValueError(f"values in [{v.min()}, {v.max()}] do not fit {bits} signed bits [{lo}, {hi}]")


def pack(values: np.ndarray, bits: int) -> bytes:
    """Pack a flat sequence of ``bits``-wide unsigned integers (0 ≤ v < 2^bits) LSB-first into bytes."""
    if not 1 <= bits <= 8:
        raise ValueError(f"bits={bits} is out of range; allowed [1, 8]")
    v = np.asarray(values, dtype=np.int64).reshape(-1)
    if v.size and (v.min() < 0 or v.max() >= (1 << bits)):
        raise ValueError(f"unsigned values in [{v.min()}, {v.max()}] do not fit {bits} bits")
    stream = ((v[:, None] >> np.arange(bits)) & 1).astype(np.uint8).reshape(-1)
    return np.packbits(stream, bitorder="little").tobytes()


def unpack(data: bytes, bits: int, count: int) -> np.ndarray:
    """Inverse of ``pack``: ``count`` unsigned integers (int64) read from ``data``."""
    if not 1 <= bits <= 8:
        raise ValueError(f"bits={bits} is out of range; allowed [1, 8]")
    need = (count * bits + 7) // 8
    if len(data) < need:
        raise ValueError(f"{len(data)} bytes hold fewer than {count} values of {bits} bits (need {need})")
    stream = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")[: count * bits]
    return (stream.reshape(count, bits).astype(np.int64) << np.arange(bits)).sum(axis=1)


def pack_container(values: np.ndarray, container: str) -> bytes:
    """Signed integers → ONNX ``raw_data`` for ``container`` (two's complement, first element in the low
    bits)."""
    if container not in CONTAINERS:
        raise ValueError(f"container={container!r} is not one of {sorted(CONTAINERS)}")
    width = CONTAINERS[container][0]
    v = np.asarray(values, dtype=np.int64).reshape(-1)
    _check_fits(v, width)
    if width == 8:
        return v.astype(np.int8).tobytes()
    return pack(v & ((1 << width) - 1), width)


def unpack_container(data: bytes, container: str, count: int) -> np.ndarray:
    """ONNX ``raw_data`` of ``container`` → ``count`` signed integers (int8)."""
    width = CONTAINERS[container][0]
    if width == 8:
        return np.frombuffer(data, dtype=np.int8, count=count).copy()
    u = unpack(data, width, count)
    return np.where(u >= 1 << (width - 1), u - (1 << width), u).astype(np.int8)


def pack_widths(values: np.ndarray, widths: np.ndarray) -> bytes:
    """Signed integers ``values [N]`` at their own widths ``widths [N]`` (0..8) → one bit stream, value after
    value, each in ``w``-bit two's complement, LSB first; a zero-width value takes no bits (and must be 0)."""
    v = np.asarray(values, dtype=np.int64).reshape(-1)
    w = np.asarray(widths, dtype=np.int64).reshape(-1)
    if v.size != w.size:
        raise ValueError(f"{v.size} values and {w.size} widths")
    if w.size and (w.min() < 0 or w.max() > 8):
        raise ValueError(f"widths in [{w.min()}, {w.max()}] are out of range; allowed [0, 8]")
    half = np.where(w > 0, 1 << np.maximum(w - 1, 0), 0)
    lo, hi = -half, np.maximum(half - 1, 0)
    bad = (v < lo) | (v > hi)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"values do not fit their widths: {v[i]} at index {i} is outside {w[i]} signed bits "
                         f"[{lo[i]}, {hi[i]}]")
    t = np.arange(8)
    bits = ((v[:, None] & ((1 << w[:, None]) - 1)) >> t) & 1
    stream = bits[t < w[:, None]].astype(np.uint8)  # row-major: value after value, LSB first
    return np.packbits(stream, bitorder="little").tobytes() if stream.size else b""


def pack_channels(values: np.ndarray, bits: np.ndarray) -> bytes:
    """Weight integers ``[C, ...]`` at per-channel widths ``bits [C]`` → one exact stream (see module doc)."""
    v = np.asarray(values, dtype=np.int64)
    b = np.asarray(bits, dtype=np.int64).reshape(-1)
    if v.ndim == 0 or v.shape[0] != b.size:
        raise ValueError(f"values of shape {v.shape} do not have {b.size} channels on axis 0")
    v = v.reshape(b.size, -1)
    return pack_widths(v, np.repeat(b, v.shape[1]))


def unpack_channels(data: bytes, bits: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of ``pack_channels``: int8 array of ``shape`` (``shape[0] == len(bits)``)."""
    b = np.asarray(bits, dtype=np.int64).reshape(-1)
    per = int(np.prod(shape[1:], dtype=np.int64))
    total = int(b.sum()) * per
    if len(data) * 8 < total:
        raise ValueError(f"{len(data)} bytes hold fewer than the {total} bits these widths need")
    stream = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")
    out = np.zeros((b.size, per), dtype=np.int64)
    pos = 0
    for c in range(b.size):
        w = int(b[c])
        if w:
            chunk = stream[pos : pos + w * per].reshape(per, w).astype(np.int64)
            u = (chunk << np.arange(w)).sum(axis=1)
            out[c] = np.where(u >= 1 << (w - 1), u - (1 << w), u)
            pos += w * per
    return out.astype(np.int8).reshape(shape)
