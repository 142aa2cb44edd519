"""Typed errors. The CLI turns each into a one-line message and an exit code."""

from __future__ import annotations

__all__ = ["ArtifactError", "ConfigError", "DataError", "ExportError", "ModelError", "SGSCError",
           "ValidationError", "user_code_exit"]


class SGSCError(Exception):
    """Base class of every error this toolchain raises on purpose. ``exit_code`` is the CLI's."""

    exit_code = 2


class ConfigError(SGSCError, ValueError):
    """A configuration value is out of range or inconsistent."""


class DataError(SGSCError):
    """A data set is missing, empty, or has the wrong shape."""


class ModelError(SGSCError):
    """A model file does not load, or holds a layer this stage cannot handle."""


class ArtifactError(SGSCError):
    """An artifact directory is missing, corrupt, or does not match its manifest."""


class ExportError(SGSCError):
    """The ONNX export could not be produced."""


class ValidationError(SGSCError):
    """The validation could not run (not: a threshold failed, which is a result, not an error)."""


def user_code_exit(exc: SystemExit, stage: str) -> ModelError:
    """The error for ``sys.exit`` called by a user's model code (a factory, a forward) inside ``stage``: a
    model never decides the exit code of a command (0 must mean the gate passed)."""
    return ModelError(f"the model code called sys.exit({exc.code!r}) during {stage}; a model factory or "
                      "forward must return or raise, not exit the process")
