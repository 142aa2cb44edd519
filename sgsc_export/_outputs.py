"""The guards of a run's outputs (torch-free): nothing an sgsc command writes destroys an input or leaves a
half-written set of reports.

An output that is an input is refused before anything is written (``check_outputs``), an unwritable report
path before a long run (``check_writable``), an ``--out`` that cannot be created before any work
(``check_out_dir``); the reports of one run are written all or none (``write_atomic_many``), and one sgsc run
at a time holds a run directory (``lock_run_dir``, with filelock; a stale lock from a killed run is named).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sgsc_export._io import write_atomic

__all__ = ["RunDirLock", "artifact_files", "check_out_dir", "check_outputs", "check_writable", "lock_run_dir",
           "same_file", "write_atomic_many"]



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
