"""Converters: a compressed artifact becomes one standard ONNX file (QDQ, packed low-bit weights).

Reads only the artifact (``sgsc_export.artifact``); imports onnx and onnx_ir when a name below is first used
(PEP 562), so ``from converters import PROFILE_NAMES`` costs nothing (the CLI's ``--help`` and ``sgsc
config``).

``export`` is both a submodule and the function it defines. The submodule is light (it imports onnx_ir when
the function runs) and is imported here, so the package's ``export`` is the function whichever of ``import
converters.export`` and ``from converters import export`` comes first: were it lazy, importing the submodule
first would leave the package attribute bound to the module (``converters.export(...)`` → "'module' object is
not callable").
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from converters.export import ExportResult, export

# The export profiles, in the order they are documented; converters.profiles.PROFILES defines each one.
PROFILE_NAMES: tuple[str, ...] = ("portable", "compact", "ort-int8")

_EXPORTS = {
    "inspect_model": "converters.inspection",
    "pack_channels": "converters.packing",
    "pack_container": "converters.packing",
    "unpack_channels": "converters.packing",
    "unpack_container": "converters.packing",
    "PROFILES": "converters.profiles",
}

__all__ = ["PROFILE_NAMES", "ExportResult", "export", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'converters' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from converters.inspection import inspect_model
    from converters.packing import pack_channels, pack_container, unpack_channels, unpack_container
    from converters.profiles import PROFILES
