"""Atomic file writes and bounded npz reads, shared by every stage (torch-free, so converters and
runtime_checks may import it).

Also the guards of every run's outputs: an output that is an input is refused before anything is written
(``check_outputs``), an unwritable report path before a long run (``check_writable``), reports of one run are
written all or none (``write_atomic_many``), one sgsc run at a time holds a run directory (``lock_run_dir``),
and an untrusted ``.npz`` is read with every declared size checked first (``load_npz_bounded``).
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["RunDirLock", "artifact_files", "check_out_dir", "check_outputs", "check_writable",
           "load_npz_bounded", "lock_run_dir", "open_regular", "read_bounded", "read_bytes_bounded",
           "same_file", "write_atomic", "write_atomic_many"]


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
    from sgsc_export.errors import DataError

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

    from sgsc_export.errors import DataError
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
    """Up to ``n`` bytes of an open file; a corrupt stream (bad gzip data) is one line of ``error``."""
    import gzip

    from sgsc_export.errors import DataError
    try:
        return f.read(n)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
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
        from sgsc_export.errors import DataError
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


# --------------------------------------------------------------------------------------------------------
# Outputs that must not destroy inputs, reports written all or none, one sgsc run per directory.

def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether ``a`` and ``b`` name one file: the same inode when both exist (symlinks and hard links
    followed), else the same resolved path."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(a).resolve() == Path(b).resolve()


def artifact_files(directory: str | Path) -> dict[str, Path]:
    """The existing files of an artifact / run directory that are its inputs (never an output of a later
    stage): ``manifest.json``, ``history.json``, ``*.safetensors``, ``*.npz``, ``pipeline.json`` and
    ``checkpoints/*``."""
    directory = Path(directory)
    found: dict[str, Path] = {}
    if not directory.is_dir():
        return found
    for p in sorted(directory.iterdir()):
        if p.is_file() and (p.name in ("manifest.json", "history.json", "pipeline.json")
                            or p.suffix in (".safetensors", ".npz")):
            found[f"the artifact's {p.name}"] = p
    if (directory / "checkpoints").is_dir():
        for p in sorted((directory / "checkpoints").iterdir()):
            if p.is_file():
                found[f"the artifact's checkpoints/{p.name}"] = p
    return found


def check_outputs(outputs: dict[str, str | Path | None], inputs: dict[str, str | Path | None]) -> None:
    """Refuse, before anything is written, an output that is an input or another output.

    ``outputs`` / ``inputs`` map a label (``"--report"``, ``"the model"``) to a path (``None``: not given).
    Raises ``ConfigError`` with one line naming both.
    """
    from sgsc_export.errors import ConfigError

    given = [(label, Path(p)) for label, p in outputs.items() if p is not None and str(p) != ""]
    for label, path in given:
        for in_label, in_path in inputs.items():
            if in_path is not None and str(in_path) != "" and same_file(path, in_path):
                where = "" if str(in_path) == str(path) else f" ({in_path})"
                raise ConfigError(f"{label} {path} is {in_label}{where}: writing it would destroy an input; "
                                  "choose another output path")
    for i, (label, path) in enumerate(given):
        for other_label, other in given[i + 1:]:
            if same_file(path, other):
                raise ConfigError(f"{label} and {other_label} are the same file ({path}); give each its own "
                                  "path")


def check_writable(outputs: dict[str, str | Path | None]) -> None:
    """Refuse, before a long run, an output path that cannot be written: its nearest existing ancestor must be
    a writable directory (probed with a temp file when the parent exists). Raises ``ConfigError``."""
    from sgsc_export.errors import ConfigError

    for label, p in outputs.items():
        if p is None or str(p) == "":
            continue
        path = Path(p)
        ancestor = path.parent
        while not ancestor.exists() and ancestor != ancestor.parent:
            ancestor = ancestor.parent
        try:
            if path.is_dir():
                raise OSError(f"{path} is a directory")
            if not ancestor.is_dir():
                raise OSError(f"{ancestor} is not a directory")
            if ancestor == path.parent:
                fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=ancestor)
                os.close(fd)
                os.unlink(tmp)
            elif not os.access(ancestor, os.W_OK | os.X_OK):
                raise OSError(f"{ancestor} is not writable")
        except OSError as exc:
            raise ConfigError(f"cannot write {label} {path}: {exc.strerror or exc}; choose a writable "
                              "path") from None


def write_atomic_many(items: Iterable[tuple[str | Path, bytes | str]]) -> None:
    """Write several files all or none: every temp file first (fsynced), then the renames.

    If any temp file cannot be written, every temp file is removed and no target is touched. Missing parent
    directories are created. (``write_atomic`` is the one-file case.)
    """
    pending: list[tuple[str, Path]] = []
    try:
        for path, data in items:
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            pending.append((tmp, path))
            with os.fdopen(fd, "wb") as f:
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
                f.flush()
                os.fsync(f.fileno())
        while pending:
            tmp, path = pending[0]
            os.replace(tmp, path)
            pending.pop(0)
    except BaseException:
        for tmp, _ in pending:
            Path(tmp).unlink(missing_ok=True)
        raise


LOCK_NAME = ".sgsc.lock"
LOCK_INFO_NAME = ".sgsc.lock.json"


@dataclass
class RunDirLock:
    """A held ``lock_run_dir``. ``stale``: the info (pid, host, started, command) a killed earlier run left
    behind, else ``None``; ``stale_pid_alive``: whether that pid still runs on this host (then it was
    reused)."""

    directory: Path
    stale: dict | None = None
    stale_pid_alive: bool = False

    def stale_note(self) -> str:
        """The one line that explains a stale lock (after the caller removed the partial files)."""
        info = self.stale or {}
        started = f", started {info['started']}" if "started" in info else ""
        return (f"note: a previous run (pid {info.get('pid', '?')}{started}) into {self.directory} was "
                "killed before it finished; its partial files were removed")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _read_info(path: Path) -> dict:
    try:
        info = json.loads(path.read_text())
        return info if isinstance(info, dict) else {}
    except (OSError, ValueError):
        return {}


@contextmanager
def lock_run_dir(directory: str | Path, command: str = "sgsc") -> Iterator[RunDirLock]:
    """Hold ``DIRECTORY/.sgsc.lock`` (an OS-level lock via ``filelock``: the kernel releases it when the
    process dies) for one sgsc run; beside it ``.sgsc.lock.json`` says who holds it (pid, host, start time,
    command).

    A second run gets ``ConfigError``: ``DIR is in use by another sgsc run (pid N …); wait for it or use
    another --out``. An info file found when the lock is free was left by a run that was killed (SIGKILL,
    power loss): it is reported in ``RunDirLock.stale`` for the caller to clean up and explain. Both files are
    removed on release. ``DIRECTORY`` is created if missing.
    """
    import socket
    import time

    import filelock

    from sgsc_export.errors import ConfigError

    directory = Path(directory)
    created = not directory.exists()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the run directory {directory}: {exc.strerror or exc}; "
                          "choose another --out") from None
    lock_path, info_path = directory / LOCK_NAME, directory / LOCK_INFO_NAME
    lock = filelock.FileLock(str(lock_path), timeout=0)
    try:
        lock.acquire()
    except filelock.Timeout:
        info = _read_info(info_path)
        held_by = (f"{k} {info[k]}" for k in ("pid", "host", "started", "command") if k in info)
        who = ", ".join(held_by) or "pid unknown"
        raise ConfigError(f"{directory} is in use by another sgsc run ({who}); wait for it or use another "
                          "--out") from None
    except OSError as exc:
        raise ConfigError(f"cannot lock the run directory {directory}: {exc.strerror or exc}") from None
    try:
        held = RunDirLock(directory)
        if info_path.exists():
            held.stale = _read_info(info_path)
            pid = held.stale.get("pid")
            held.stale_pid_alive = (isinstance(pid, int) and held.stale.get("host") == socket.gethostname()
                                    and pid != os.getpid() and _pid_alive(pid))
        write_atomic(info_path, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                            "command": command}))
        yield held
    finally:
        info_path.unlink(missing_ok=True)
        lock_path.unlink(missing_ok=True)  # while still held: a waiter then retries on a fresh file
        lock.release()
        if created:
            try:
                directory.rmdir()  # only if the run wrote nothing into the directory it created
            except OSError:
                pass


def check_out_dir(out: str | Path) -> None:
    """The artifact directory can be created and written; checked before any work (data, training), so a bad
    ``--out`` costs nothing. Creates nothing."""
    from sgsc_export.errors import ConfigError

    p = Path(out)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"--out {p} exists and is not a directory; give a directory path")
    existing = p
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"--out {p} cannot be created: {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"--out {p} cannot be {'written' if existing == p else 'created'}: {existing} is "
                          "not writable; choose a directory you can write to")
