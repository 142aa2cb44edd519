"""The artifact's on-disk format, torch-free: file list, hashes, the manifest schema (docs/ARTIFACT.md).

Every stage that reads an artifact directory goes through :func:`read_artifact_files` (the converters, via
``CompressedModel.load``, and the runtime checks, which may not import torch; :func:`verify_artifact_files`
is the same check for a reader that wants only the manifest): the manifest is a JSON object of this format
and version, every file it lists is present, a regular file inside the directory, and has the SHA-256 the
manifest records. :func:`check_manifest` checks the types and ranges of every field the converters and the
rebuild read, so a hand-edited or hostile manifest is one line, never a traceback.

The preservation set's identity is :func:`preservation_sha256`, computed the same way by the compression (the
manifest's ``preservation.sha256``), the export (the ONNX metadata) and the runtime checks.

An artifact is data, never code: nothing here imports or runs anything a manifest names
(:mod:`sgsc_export.artifact.rebuild` holds the trust rule for the model factory). This module imports only
numpy and the standard library (no torch), so a reader such as ``runtime_checks`` stays light.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from sgsc_export._limits import input_limit_message, max_input_bytes
from sgsc_export.errors import ArtifactError

__all__ = ["ARTIFACT_FILES", "FORMAT", "FORMAT_VERSION", "MAX_JSON_BYTES", "check_manifest",
           "preservation_sha256", "read_artifact_files", "read_json", "sha256_hex", "verify_artifact_files"]

FORMAT = "sgsc-artifact"
FORMAT_VERSION = 1
# the files whose SHA-256 the manifest records (manifest["files"]); history.json is informative and not hashed
ARTIFACT_FILES = ("model.safetensors", "quant.safetensors", "preservation.npz", "eval.npz")
# manifest.json and history.json are read whole: a bound, far above any real one (a few MiB for the largest
# run)
MAX_JSON_BYTES = 64 * 2**20
MAX_BITS = 8
_SHA = re.compile(r"[0-9a-f]{64}")
_TASKS = ("classification", "language_model")
_MAX_DIM, _MAX_INPUT = 2**20, 2**24      # one input dimension; elements of one input sample


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def preservation_sha256(x: np.ndarray, y: np.ndarray) -> str:
    """The preservation set's SHA-256: ``sha256(float32(x).tobytes() + int64(y).tobytes())`` over the samples
    in order (the contract shared by the manifest, the ONNX metadata and the runtime checks;
    docs/ARTIFACT.md)."""
    h = hashlib.sha256(np.ascontiguousarray(x, np.float32).tobytes())
    h.update(np.ascontiguousarray(y, np.int64).tobytes())
    return h.hexdigest()


def _inside(directory: Path, name: str) -> Path:
    """``directory/name`` as a regular file whose real path is inside ``directory`` (no symlink out, no
    device)."""
    p = directory / name
    if not p.is_file():
        raise ArtifactError(f"{p} is missing; the artifact is incomplete, re-run `sgsc compress`")
    if p.is_symlink() and directory.resolve() not in p.resolve().parents:
        raise ArtifactError(f"{p} is a symlink to {p.resolve()}, outside the artifact directory; copy the "
                            "file in")
    return p


def read_json(path: Path, what: str) -> Any:
    """A JSON file of at most ``MAX_JSON_BYTES``; any decoding problem is one ArtifactError line."""
    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        raise ArtifactError(f"{path} is {size} bytes, over the {MAX_JSON_BYTES // 2**20} MiB limit for "
                            f"{what}; it is not an sgsc file")
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise ArtifactError(f"{path} is not valid JSON ({reason}); the {what} is corrupt, re-run `sgsc "
                            "compress`"
                            ) from None


def _header(directory: Path) -> tuple[dict[str, Any], dict[str, str]]:
    if not directory.is_dir():
        raise ArtifactError(f"artifact directory {directory} does not exist; run `sgsc compress --out "
                            f"{directory}` first")
    mpath = directory / "manifest.json"
    if not mpath.is_file():
        raise ArtifactError(f"{directory} has no manifest.json: not an artifact, or compression did not "
                            "finish")
    manifest = read_json(_inside(directory, "manifest.json"), "manifest")
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArtifactError(f"{mpath} is not an sgsc artifact manifest (format != {FORMAT!r})")
    version = manifest.get("format_version")
    if type(version) is not int or version != FORMAT_VERSION:
        raise ArtifactError(f"{mpath} has format_version {version!r}; this toolchain reads {FORMAT_VERSION}")
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise ArtifactError(f"{mpath} has no 'files' table of SHA-256s; the artifact cannot be checked, "
                            "re-run `sgsc compress`")
    for name in ARTIFACT_FILES:
        if not isinstance(files.get(name), str) or not _SHA.fullmatch(files[name]):
            raise ArtifactError(f"{mpath}: files[{name!r}] is not a SHA-256 (64 hex digits); the manifest is "
                                "corrupt, re-run `sgsc compress`")
    return manifest, files


def read_artifact_files(directory: str | Path) -> tuple[dict[str, Any], dict[str, bytes]]:
    """``(manifest, {file name: bytes})`` after checking format, version and every file's SHA-256."""
    d = Path(directory)
    manifest, files = _header(d)
    blobs = {}
    for name in ARTIFACT_FILES:
        p = _inside(d, name)
        size = p.stat().st_size
        if size > max_input_bytes():
            raise ArtifactError(input_limit_message(str(p), size))
        b = p.read_bytes()
        if sha256_hex(b) != files[name]:
            raise ArtifactError(f"{p} does not match the manifest (SHA-256 differs); the artifact was "
                                "modified or corrupted, re-run `sgsc compress`")
        blobs[name] = b
    return manifest, blobs


def verify_artifact_files(directory: str | Path) -> dict[str, Any]:
    """The manifest of ``directory`` after checking format, version and every listed file's SHA-256."""
    return read_artifact_files(directory)[0]


# -- the manifest schema ------------------------------------------------------------------------------------
def _int(value: Any, where: str, lo: int, hi: int) -> int:
    if type(value) is not int or not lo <= value <= hi:
        raise ArtifactError(f"manifest.json: {where} must be an integer in [{lo}, {hi}], got {_show(value)}; "
                            "the manifest is corrupt, re-run `sgsc compress`")
    return value


def _show(value: Any) -> str:
    scalar = isinstance(value, (int, float, str, bool, type(None)))
    text = json.dumps(value) if scalar else type(value).__name__
    return text if len(text) <= 40 else text[:37] + "..."


def _bad(where: str, what: str, value: Any) -> ArtifactError:
    return ArtifactError(f"manifest.json: {where} must be {what}, got {_show(value)}; the manifest is "
                         "corrupt, re-run `sgsc compress`")


def _scalar(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return value is None or isinstance(value, (bool, int, str))


def check_manifest(manifest: dict[str, Any]) -> None:
    """Types and ranges of every field the converters and the rebuild read; raises ArtifactError naming it."""
    model = manifest.get("model")
    if not isinstance(model, dict):
        raise _bad("model", "an object", model)
    if not isinstance(model.get("factory"), str) or ":" not in model["factory"]:
        raise _bad("model.factory", "a string 'module:function' or 'file.py:function'", model.get("factory"))
    kwargs = model.get("kwargs", {})
    if kwargs is not None and not isinstance(kwargs, dict):
        raise _bad("model.kwargs", "an object", kwargs)
    for key, value in (kwargs or {}).items():
        if not _scalar(value):
            raise _bad(f"model.kwargs[{key!r}]", "a JSON scalar (number, string, true/false, null)", value)
    digest = model.get("source_sha256")
    if digest is not None and (not isinstance(digest, str) or not _SHA.fullmatch(digest)):
        raise _bad("model.source_sha256", "null or a SHA-256 (64 hex digits)", digest)
    if model.get("task", "classification") not in _TASKS:
        raise _bad("model.task", f"one of {', '.join(_TASKS)}", model.get("task"))
    if model.get("input_dtype", "float32") not in ("float32", "int64"):
        raise _bad("model.input_dtype", "float32 or int64", model.get("input_dtype"))
    shape = model.get("input_shape")
    if not isinstance(shape, list) or not 2 <= len(shape) <= 6:
        raise _bad("model.input_shape", "a list of 2 to 6 integers", shape)
    n = 1
    for i, dim in enumerate(shape):
        n *= _int(dim, f"model.input_shape[{i}]", 1, _MAX_DIM)
    if n > _MAX_INPUT:
        raise ArtifactError(f"manifest.json: model.input_shape {shape} has {n} elements a sample, over the "
                            f"limit of {_MAX_INPUT}; the manifest is corrupt, re-run `sgsc compress`")
    folded = manifest.get("folded_batchnorm", [])
    if not isinstance(folded, list) or not all(
            isinstance(p, list) and len(p) == 2 and all(isinstance(s, str) and s for s in p) for p in folded):
        raise _bad("folded_batchnorm", "a list of [conv name, batchnorm name] pairs", folded)
    _check_layers(manifest.get("layers"))
    pres = manifest.get("preservation")
    if (not isinstance(pres, dict) or not isinstance(pres.get("sha256"), str)
            or not _SHA.fullmatch(pres["sha256"])):
        raise _bad("preservation.sha256", "a SHA-256 (64 hex digits)", (pres or {}).get("sha256")
                   if isinstance(pres, dict) else pres)
    lm = manifest.get("language_model")
    if lm is not None:
        vocab = lm.get("vocab") if isinstance(lm, dict) else lm
        if not isinstance(vocab, str) or not vocab:  # one character a token (sgsc_export.datasets.text)
            raise _bad("language_model.vocab", "a non-empty string (token id = index)", vocab)
        _int(lm.get("context"), "language_model.context", 1, _MAX_DIM)


def _check_layers(layers: Any) -> None:
    if not isinstance(layers, list):
        raise _bad("layers", "a list of the compressed layers", layers)
    if not layers:
        raise ArtifactError("manifest.json lists no compressed layers ('layers' is empty): exporting it "
                            "would pass a float model off as compressed; re-run `sgsc compress`")
    names = set()
    for i, layer in enumerate(layers):
        where = f"layers[{i}]"
        if not isinstance(layer, dict):
            raise _bad(where, "an object", layer)
        name = layer.get("name")
        if not isinstance(name, str) or not name or name in names:
            raise _bad(f"{where}.name", "a unique, non-empty layer name", name)
        names.add(name)
        if "kind" in layer and not isinstance(layer["kind"], str):
            raise _bad(f"{where}.kind", "a string", layer["kind"])
        shape = layer.get("weight_shape")
        if not isinstance(shape, list) or not 2 <= len(shape) <= 5:
            raise _bad(f"{where}.weight_shape", "a list of 2 to 5 integers", shape)
        for j, dim in enumerate(shape):
            _int(dim, f"{where}.weight_shape[{j}]", 1, 2**31 - 1)
        bits = layer.get("bits")
        if not isinstance(bits, list) or len(bits) != shape[0]:
            raise ArtifactError(f"manifest.json: {where}.bits must list one bit-width per output channel "
                                f"({shape[0]}, from weight_shape), got "
                                f"{len(bits) if isinstance(bits, list) else _show(bits)}; re-run `sgsc "
                                "compress`")
        for j, b in enumerate(bits):
            _int(b, f"{where}.bits[{j}]", 0, MAX_BITS)
        for key in ("channels_kept", "channels_before", "channels_removed", "channels_masked", "stored_bits"):
            if key in layer:
                _int(layer[key], f"{where}.{key}", 0, 2**62)
        reason = layer.get("masked_reason")
        if reason is not None and not (isinstance(reason, str) and len(reason) <= 500):
            raise _bad(f"{where}.masked_reason", "null or a line of text", reason)
        if "channels_kept" in layer and layer["channels_kept"] != shape[0]:
            raise ArtifactError(f"manifest.json: {where}.channels_kept is {layer['channels_kept']} but "
                                f"weight_shape has {shape[0]} channels; the manifest is inconsistent, re-run "
                                "`sgsc compress`")
        exps = layer.get("exponents")
        if exps is not None and (not isinstance(exps, list) or len(exps) != shape[0] or not all(
                isinstance(e, (int, float)) and not isinstance(e, bool) and math.isfinite(e) for e in exps)):
            raise _bad(f"{where}.exponents", f"{shape[0]} finite numbers", exps)
