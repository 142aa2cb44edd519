"""Lazy package attributes (PEP 562), one implementation for the three packages' ``__init__``.

``import sgsc_export``, ``import converters`` and ``import runtime_checks`` stay cheap (no torch, onnx_ir or
onnxruntime): a public name is imported from its submodule on first use, then cached in the package.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(package: str, exports: Mapping[str, str], namespace: MutableMapping[str, Any],
                 public: list[str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: ``exports`` maps a name to the submodule (relative to the
    package) that defines it; ``namespace`` is the package's ``globals()``, ``public`` its ``__all__``."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = namespace[name] = getattr(importlib.import_module(f"{package}.{exports[name]}"), name)
        return value

    def __dir__() -> list[str]:
        return sorted(public)

    return __getattr__, __dir__
