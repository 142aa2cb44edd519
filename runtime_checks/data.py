"""The data a validation runs on: the test split, the preservation set, and optional references.

Two sources: the artifact directory of ``sgsc compress`` (``eval.npz`` + ``manifest.json``), or a user's
``.npz`` with arrays ``x``, ``y`` and optionally ``preservation_indices`` (test = all samples, preservation =
those indices) and ``logits`` (reference logits for all samples). The preservation set's
identity is its SHA-256:

    sha256(float32(x_pres).tobytes() + int64(y_pres).tobytes())

over the preservation samples in order; a model exported from an artifact carries it in its metadata.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sgsc_export.artifact.format import preservation_sha256
from sgsc_export.errors import ValidationError

__all__ = ["EvalData", "preservation_sha256"]


@dataclass
class EvalData:
    """Inputs (float32, model layout), labels (int64) and optional reference logits of both splits.

    ``float_test_accuracy`` / ``float_preservation_accuracy`` are the float model's accuracies (fractions),
    the baseline of ``--max-accuracy-drop``; ``source`` says where the data came from, for the report.
    """

    x_test: np.ndarray
    y_test: np.ndarray
    x_preservation: np.ndarray
    y_preservation: np.ndarray
    ref_test: np.ndarray | None = None
    ref_preservation: np.ndarray | None = None
    float_test_accuracy: float | None = None
    float_preservation_accuracy: float | None = None
    source: str = "arrays"
    float_test_perplexity: float | None = None
    float_preservation_perplexity: float | None = None
    run_dir: Path | None = None

    def __post_init__(self) -> None:
        for name in ("x_test", "x_preservation"):  # token ids (a language model's input) stay int64
            x = np.asarray(getattr(self, name))
            if x.dtype == np.bool_ or not (np.issubdtype(x.dtype, np.integer)
                                           or np.issubdtype(x.dtype, np.floating)):
                raise ValidationError(f"{self.source}: {name} has dtype {x.dtype}; it must hold real numbers "
                                      "(float inputs, or integer token ids)")
            if x.ndim < 2 and x.size:
                raise ValidationError(f"{self.source}: {name} has shape {x.shape}; it must be "
                                      "[samples, *input_shape]")
            setattr(self, name,
                    np.ascontiguousarray(x, np.int64 if np.issubdtype(x.dtype, np.integer) else np.float32))
            if (not np.issubdtype(getattr(self, name).dtype, np.integer)
                    and not np.isfinite(getattr(self, name)).all()):
                raise ValidationError(f"{self.source}: {name} holds NaN or infinite values; clean the data")
        if len(self.x_test) == 0:
            raise ValidationError(f"{self.source}: the test split is empty; provide at least one sample")
        for split in ("test", "preservation"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if len(x) != len(np.asarray(y)):
                raise ValidationError(f"{self.source}: x_{split} has {len(x)} samples but y_{split} has "
                                      f"{len(np.asarray(y))}")
            y = np.asarray(y)
            if len(y) and (y.dtype == np.bool_ or not np.issubdtype(y.dtype, np.integer)):
                raise ValidationError(f"{self.source}: y_{split} has dtype {y.dtype}; labels must be integer "
                                      "class indices")
            y = y.astype(np.int64)
            setattr(self, f"y_{split}", y)
            if y.ndim not in (1, 2):
                raise ValidationError(f"{self.source}: y_{split} must be class indices [N] or next-token "
                                      f"targets [N, T], got shape {y.shape}")
            ref = getattr(self, f"ref_{split}")
            if ref is not None:
                ref = np.asarray(ref, np.float32)
                if ref.ndim != y.ndim + 1 or len(ref) != len(x):
                    raise ValidationError(f"{self.source}: ref_{split} must be [{len(x)}, classes] (or "
                                          f"[{len(x)}, T, vocab] for a language model), got shape "
                                          f"{ref.shape}")
                setattr(self, f"ref_{split}", ref)
        if len(self.x_preservation) and self.x_preservation.shape[1:] != self.x_test.shape[1:]:
            raise ValidationError(f"{self.source}: preservation inputs {self.x_preservation.shape[1:]} "
                                  f"and test inputs {self.x_test.shape[1:]} differ in shape")
        for name in ("float_test_accuracy", "float_preservation_accuracy"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValidationError(f"{self.source}: {name} must be a fraction in [0, 1], got {value}")

    def float_perplexity(self, name: str) -> float | None:
        """The float model's perplexity on split ``name`` (language models), the perplexity-ratio baseline."""
        return getattr(self, f"float_{name}_perplexity")

    @property
    def preservation_sha256(self) -> str:
        return preservation_sha256(self.x_preservation, self.y_preservation)

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, float | None]:
        """``(x, y, reference logits, float accuracy)`` of split ``"test"`` or ``"preservation"``."""
        return (getattr(self, f"x_{name}"), getattr(self, f"y_{name}"), getattr(self, f"ref_{name}"),
                getattr(self, f"float_{name}_accuracy"))

    @classmethod
    def from_run_dir(cls, run_dir: str | Path) -> EvalData:
        """Load ``DIR/eval.npz`` and ``DIR/manifest.json`` after checking every artifact file's SHA-256
        against the manifest (``sgsc_export.artifact.format.read_artifact_files``, the check
        ``verify_artifact_files`` makes); check the preservation set against the manifest."""
        from sgsc_export._io import load_npz_bounded
        from sgsc_export.artifact.format import read_artifact_files
        from sgsc_export.errors import ArtifactError

        run_dir = Path(run_dir)
        if not (run_dir / "manifest.json").is_file():
            raise ValidationError(f"{run_dir}: no manifest.json; not a complete sgsc artifact directory")
        try:
            manifest, blobs = read_artifact_files(run_dir)  # the bytes checked are the bytes read
            arrays = load_npz_bounded(blobs["eval.npz"], error=ValidationError, name=f"{run_dir}/eval.npz")
        except ArtifactError as exc:
            raise ValidationError(str(exc)) from None
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise ValidationError(f"{run_dir}: cannot read the artifact: {exc}") from exc
        return cls._from_artifact(manifest, arrays, f"run:{run_dir}", run_dir)

    @classmethod
    def from_compressed(cls, compressed: Any) -> EvalData:
        """The evaluation data of an in-memory ``CompressedModel`` (its ``manifest`` and ``eval`` arrays)."""
        manifest, arrays = getattr(compressed, "manifest", None), getattr(compressed, "eval", None)
        if not isinstance(manifest, dict) or not isinstance(arrays, dict):
            raise ValidationError("expected a CompressedModel (manifest and eval), got "
                                  f"{type(compressed).__name__}")
        return cls._from_artifact(manifest, {k: np.asarray(v) for k, v in arrays.items()},
                                  "compressed-model", None)

    @classmethod
    def _from_artifact(cls, manifest: dict, arrays: dict, source: str, run_dir: Path | None) -> EvalData:
        missing = [k for k in ("x_test", "y_test", "x_preservation", "y_preservation") if k not in arrays]
        if missing:
            raise ValidationError(f"{source}: the evaluation data misses arrays {missing}")
        metrics = (manifest.get("metrics") or {}).get("float") or {}
        data = cls(arrays["x_test"], arrays["y_test"], arrays["x_preservation"], arrays["y_preservation"],
                   ref_test=arrays.get("logits_test"), ref_preservation=arrays.get("logits_preservation"),
                   float_test_accuracy=metrics.get("test_accuracy"),
                   float_preservation_accuracy=metrics.get("preservation_accuracy"),
                   source=source, run_dir=run_dir,
                   float_test_perplexity=metrics.get("test_perplexity"),
                   float_preservation_perplexity=metrics.get("preservation_perplexity"))
        expected = (manifest.get("preservation") or {}).get("sha256")
        if not expected:
            raise ValidationError(f"{source}: the manifest has no preservation.sha256; cannot identify the "
                                  "preservation set")
        if expected != data.preservation_sha256:
            raise ValidationError(f"{source}: the preservation set's SHA-256 "
                                  f"{data.preservation_sha256[:12]}… does not match the manifest's "
                                  f"{expected[:12]}…")
        return data

    @classmethod
    def from_npz(cls, path: str | Path) -> EvalData:
        """Load a user's ``.npz``: ``x``, ``y``, optional ``preservation_indices`` and ``logits``."""
        path = Path(path)
        from sgsc_export._io import load_npz_bounded

        arrays = load_npz_bounded(path, allowed_keys=("x", "y", "preservation_indices", "logits"),
                                  error=ValidationError)
        for key in ("x", "y"):
            if key not in arrays:
                raise ValidationError(f"{path}: missing array {key!r} (expected x, y, optional "
                                      f"preservation_indices, logits)")
        x, y, logits = arrays["x"], arrays["y"], arrays.get("logits")
        idx = np.asarray(arrays.get("preservation_indices", np.zeros(0, np.int64)))
        if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
            raise ValidationError(f"{path}: preservation_indices must be 1-D integers, got "
                                  f"{idx.dtype} {idx.shape}")
        if len(idx) and (idx.min() < 0 or idx.max() >= len(x)):
            raise ValidationError(f"{path}: preservation_indices out of range [0, {len(x)})")
        return cls(x, y, x[idx], np.asarray(y)[idx], ref_test=logits,
                   ref_preservation=None if logits is None else logits[idx], source=f"npz:{path}")
