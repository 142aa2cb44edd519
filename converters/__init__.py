"""Converters: a compressed artifact becomes one standard ONNX file (QDQ, packed low-bit weights).

Reads only the artifact (``sgsc_export.artifact``); imports onnx and onnx_ir when a name below is first used
(PEP 562), so ``from converters import PROFILE_NAMES`` costs nothing (the CLI's ``--help`` and ``sgsc
config``). The export function lives in ``converters.exporter``: a submodule named ``export`` would rebind
the package attribute ``converters.export`` to itself when imported, and the function would be lost.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sgsc_export._lazy import lazy_exports

# The export profiles, in the order they are documented; converters.profiles.PROFILES defines each one.
PROFILE_NAMES: tuple[str, ...] = ("portable", "compact", "ort-int8")

_EXPORTS = {
    "ExportResult": "exporter",
    "export": "exporter",
    "inspect_model": "inspection",
    "pack_channels": "packing",
    "pack_container": "packing",
    "unpack_channels": "packing",
    "unpack_container": "packing",
    "PROFILES": "profiles",
}

__all__ = ["PROFILE_NAMES", *_EXPORTS]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals(), __all__)


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from converters.exporter import ExportResult, export
    from converters.inspection import inspect_model
    from converters.packing import pack_channels, pack_container, unpack_channels, unpack_container
    from converters.profiles import PROFILES
