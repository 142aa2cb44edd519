"""Size limits for untrusted inputs, in one place (torch-free, so converters and runtime_checks may import
it).

Every reader of a file a user did not write checks the sizes the file *declares* against these limits before
allocating anything, and refuses with one line naming the limit and the environment variable that raises it:

- ``MAX_INPUT_BYTES`` (``SGSC_MAX_INPUT_BYTES``, default 4 GiB): decoded arrays of one ``.npz`` file, and the
  bytes of one ONNX model (its ``.onnx`` file plus its external data, or the intermediates of a constant
  subgraph that ``sgsc inspect`` evaluates).
- ``MAX_ONNX_ELEMENTS`` (``SGSC_MAX_ONNX_ELEMENTS``, default 2^28): elements of any one tensor an ONNX graph
  declares or computes from constants (initializers, sparse initializers, statically inferred shapes).

The values are read from the environment at each call, so a test or a user may set them per process.
"""

from __future__ import annotations

import os

from sgsc_export.errors import ConfigError

__all__ = ["DEFAULT_MAX_INPUT_BYTES", "DEFAULT_MAX_ONNX_ELEMENTS", "MAX_INPUT_BYTES_ENV",
           "MAX_ONNX_ELEMENTS_ENV", "format_bytes", "input_limit_message", "max_input_bytes",
           "max_onnx_elements", "onnx_limit_message"]

MAX_INPUT_BYTES_ENV = "SGSC_MAX_INPUT_BYTES"
MAX_ONNX_ELEMENTS_ENV = "SGSC_MAX_ONNX_ELEMENTS"
DEFAULT_MAX_INPUT_BYTES = 4 << 30
DEFAULT_MAX_ONNX_ELEMENTS = 1 << 28


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer; set it to a positive whole number") from None
    if value < 1:
        raise ConfigError(f"{name}={raw!r} must be >= 1")
    return value


def max_input_bytes() -> int:
    """The largest decoded input (one npz's arrays, one ONNX model's bytes) in bytes."""
    return _env_int(MAX_INPUT_BYTES_ENV, DEFAULT_MAX_INPUT_BYTES)


def max_onnx_elements() -> int:
    """The largest element count of one tensor an ONNX graph declares or computes from constants."""
    return _env_int(MAX_ONNX_ELEMENTS_ENV, DEFAULT_MAX_ONNX_ELEMENTS)


def format_bytes(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}" if n % size else f"{n // size} {unit}"
    return f"{n} bytes"


def input_limit_message(what: str, nbytes: int, limit: int | None = None) -> str:
    """``"<what> (<n>) exceeds the 4 GiB input limit; set SGSC_MAX_INPUT_BYTES to raise it"``."""
    limit = max_input_bytes() if limit is None else limit
    return (f"{what} ({format_bytes(nbytes)}) exceeds the {format_bytes(limit)} input limit; "
            f"set {MAX_INPUT_BYTES_ENV} to raise it")


def onnx_limit_message(what: str, elements: int, limit: int | None = None) -> str:
    """``"<what> has <n> elements, over the 268435456-element ONNX tensor limit;
    set SGSC_MAX_ONNX_ELEMENTS …"``."""
    limit = max_onnx_elements() if limit is None else limit
    return (f"{what} has {elements} elements, over the {limit}-element ONNX tensor limit; "
            f"set {MAX_ONNX_ELEMENTS_ENV} to raise it")
