"""Atomic file writes and bounded reads of untrusted files, shared by every stage (torch-free, so converters
and runtime_checks may import it).

A file is written through a temp file and a rename (``write_atomic``); an untrusted ``.npz`` is read with
every declared size checked first (``load_npz_bounded``); any other untrusted file is read only if it is a
regular file, never past a limit (``open_regular``, ``read_bounded``, ``read_bytes_bounded``). The guards of
a run's outputs live in :mod:`sgsc_export._outputs`.
"""

from __future__ import annotations

import io
import os
import tempfile
import zipfile
import zlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from sgsc_export.errors import DataError

__all__ = ["load_npz_bounded", "open_regular", "read_bounded", "read_bytes_bounded", "write_atomic"]


def write_atomic(path: str | Path, data: bytes | str) -> None:
    """A temp file beside ``path``, fsynced, then renamed over it: never a half-written file.

    The temp file is removed on any error, Ctrl-C included. Missing parent directories are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_npz_bounded(source: str | Path | bytes, max_bytes: int | None = None,
                     allowed_keys: Iterable[str] | None = None, *, error: type[Exception] | None = None,
                     name: str | None = None) -> dict[str, np.ndarray]:
    """The arrays of an untrusted ``.npz`` file, with every size checked before anything is allocated.

    Each member's ``.npy`` header is read from the zip first: its declared ``shape × itemsize`` (and the zip
    member's declared uncompressed size) must fit in what is left of ``max_bytes`` (default
    :func:`sgsc_export._limits.max_input_bytes`, ``SGSC_MAX_INPUT_BYTES``); object dtypes (pickles) are
    refused; the data is then read in chunks into an array of exactly the declared size, and a short or
    corrupt member is refused. Only members in ``allowed_keys`` are read (the others are not decompressed at
    all). Errors are ``error`` (default :class:`sgsc_export.errors.DataError`) with a one-line message
    starting with ``name`` (default: the path).
    """
    from sgsc_export._limits import input_limit_message, max_input_bytes
    error = error or DataError
    label = name or ("<bytes>" if isinstance(source, bytes | bytearray) else str(source))
    limit = max_input_bytes() if max_bytes is None else int(max_bytes)
    allowed = None if allowed_keys is None else set(allowed_keys)
    try:
        archive = zipfile.ZipFile(io.BytesIO(source) if isinstance(source, bytes | bytearray) else source)
    except FileNotFoundError:
        raise error(f"{label}: no such file") from None
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise error(f"{label}: cannot read it as .npz ({_first_line(exc)}); write it with "
                    "numpy.savez") from None
    arrays: dict[str, np.ndarray] = {}
    used = 0
    with archive:
        for info in archive.infolist():
            key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            if allowed is not None and key not in allowed:
                continue
            if key in arrays:
                raise error(f"{label}: array {key!r} appears twice in the archive; the file is malformed")
            if info.file_size > limit - used + _NPY_HEADER_SLACK:
                raise error(input_limit_message(f"{label}: array {key!r} decompresses to {info.file_size} "
                                                "bytes, which", used + info.file_size, limit))
            try:
                with archive.open(info) as member:
                    array = _read_npy_bounded(member, info.file_size, used, limit, f"{label}: array {key!r}",
                                              error)
            except error:  # type: ignore[misc] - error is an exception class
                raise
            except Exception as exc:  # noqa: BLE001 - zipfile/zlib/numpy raise many types for a bad member
                raise error(f"{label}: array {key!r} is corrupt ({type(exc).__name__}: "
                            f"{_first_line(exc)})") from None
            used += array.nbytes
            arrays[key] = array
    return arrays


_NPY_HEADER_SLACK = 1 << 16  # a .npy header is at most a few KiB (numpy's own cap is 10,000 bytes by default)


def open_regular(path: str | Path, what: str, *, gzipped: bool = False, error: type[Exception] | None = None):
    """An untrusted regular file opened for binary reading (through gzip when ``gzipped``).

    A device, FIFO or directory is refused with one line (``/dev/zero`` would never end).
    """
    import gzip

    error = error or DataError
    path = Path(path)
    if not path.exists():
        raise error(f"{what} {path} does not exist")
    if not path.is_file():
        raise error(f"{what} {path} is not a regular file; give the path of a file")
    try:
        return (gzip.open if gzipped else open)(path, "rb")
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {_first_line(exc)}") from exc


def read_bounded(f, n: int, what: str, error: type[Exception] | None = None) -> bytes:
    """Up to ``n`` bytes of an open file; a corrupt stream (a bad gzip header, truncated or corrupt deflate
    data) is one line of ``error`` naming ``what``."""
    try:
        return f.read(n)
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise (error or DataError)(f"cannot read {what}: {_first_line(exc)}") from exc


def read_bytes_bounded(path: str | Path, what: str, *, max_bytes: int | None = None,
                       error: type[Exception] | None = None) -> bytes:
    """The bytes of an untrusted regular file, refused with one line when larger than ``max_bytes``
    (default ``SGSC_MAX_INPUT_BYTES``): the read stops one byte past the limit."""
    from sgsc_export._limits import format_bytes, input_limit_message, max_input_bytes
    limit = max_input_bytes() if max_bytes is None else max_bytes
    with open_regular(path, what, error=error) as f:
        raw = read_bounded(f, limit + 1, f"{what} {path}", error)
    if len(raw) > limit:
        size = Path(path).stat().st_size
        message = (input_limit_message(f"{what} {path}", size, limit) if max_bytes is None else
                   f"{what} {path} ({format_bytes(size)}) is larger than a {what} can be "
                   f"({format_bytes(limit)})")
        raise (error or DataError)(message)
    return raw


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _read_npy_bounded(fp, member_size: int, used: int, limit: int, label: str,
                      error: type[Exception]) -> np.ndarray:
    from sgsc_export._limits import input_limit_message

    fmt = np.lib.format
    version = fmt.read_magic(fp)
    if version == (1, 0):
        shape, fortran, dtype = fmt.read_array_header_1_0(fp)
    elif version == (2, 0):
        shape, fortran, dtype = fmt.read_array_header_2_0(fp)
    else:
        raise error(f"{label}: unsupported .npy format version {version}; write it with numpy.save")
    if dtype.hasobject:
        raise error(f"{label} has an object dtype (a pickle); only plain numeric arrays are read")
    if any(int(dim) < 0 for dim in shape):
        raise error(f"{label} declares a negative dimension {tuple(shape)}; the file is malformed")
    count = 1
    for dim in shape:
        count *= int(dim)
    nbytes = count * dtype.itemsize
    if used + nbytes > limit:
        what = f"{label} declares shape {tuple(shape)} of {dtype}, which"
        if used:
            what = (f"{label} declares shape {tuple(shape)} of {dtype}; with the arrays read before it, "
                    "the file")
        raise error(input_limit_message(what, used + nbytes, limit))
    if fp.tell() + nbytes != member_size:
        raise error(f"{label}: its header declares {fp.tell() + nbytes} bytes but its zip member holds "
                    f"{member_size}; the file is truncated or malformed")
    array = np.empty(count, dtype=dtype)
    view = memoryview(array.view(np.uint8).reshape(-1)) if nbytes else memoryview(b"")
    done = 0
    while done < nbytes:
        chunk = fp.read(min(1 << 22, nbytes - done))
        if not chunk:
            raise error(f"{label} is truncated: {done} of {nbytes} bytes present")
        view[done:done + len(chunk)] = chunk
        done += len(chunk)
    if fp.read(1):  # reaching the end also makes zipfile check the member's CRC-32
        raise error(f"{label} has data past its declared size; the file is malformed")
    if fortran:
        return array.reshape(shape[::-1]).transpose()
    return array.reshape(shape)
