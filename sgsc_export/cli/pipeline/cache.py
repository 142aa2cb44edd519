"""Which pipeline stages can be reused: ``OUT/pipeline.json`` records, per stage, the content hash of its
inputs and config (the key) and the SHA-256 of every file it wrote. A stage is reused only when its key is
unchanged and every recorded output is still there, byte for byte. Written atomically after each stage, so an
interrupted run never records a stage it did not finish; a stage that is redone or fails first removes what it
supersedes (``StageCache.supersede``), so no earlier report saying "passed" survives a rerun that errors.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sgsc_export._io import write_atomic

__all__ = ["StageCache", "file_sha256", "hash_json", "write_atomic"]

CACHE_VERSION = 1


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def hash_json(value: Any) -> str:
    """SHA-256 of a JSON-able value, independent of key order."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


class StageCache:
    """``OUT/pipeline.json``: ``{"version", "stages": {name: {"key", "outputs": {relative path:
    sha256}}}}``."""

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.path = self.out / "pipeline.json"
        self.stages: dict[str, dict[str, Any]] = {}
        if self.path.is_file():
            try:
                data = json.loads(self.path.read_text())
                if data.get("version") == CACHE_VERSION and isinstance(data.get("stages"), dict):
                    self.stages = data["stages"]
            except (OSError, ValueError):
                self.stages = {}  # unreadable: nothing is reused

    def fresh(self, name: str, key: str) -> bool:
        """The stage ran to the end with this key, and its outputs are unchanged."""
        entry = self.stages.get(name)
        if not entry or entry.get("key") != key or entry.get("status") != "done":
            return False
        for rel, sha in entry.get("outputs", {}).items():
            p = self.out / rel
            if not p.is_file() or file_sha256(p) != sha:
                return False
        return True

    def started(self, name: str, key: str) -> None:
        """Mark a stage as begun (with its key, so that ``--resume`` can tell a checkpoint's config)."""
        self.stages[name] = {"key": key, "status": "started", "outputs": {}}
        self._save()

    def done(self, name: str, key: str, outputs: Iterable[str | Path]) -> None:
        rels = sorted(str(Path(p).resolve().relative_to(self.out.resolve())) for p in outputs)
        self.stages[name] = {"key": key, "status": "done", "outputs": {r: file_sha256(self.out / r)
                                                                       for r in rels}}
        self._save()

    def supersede(self, names: Iterable[str]) -> list[Path]:
        """Remove the recorded outputs of these stages and forget them (saved at once): a rerun that redoes or
        fails a stage must not leave an earlier run's file (a report saying "passed") beside its own."""
        removed: list[Path] = []
        changed = False
        for name in list(names):
            entry = self.stages.pop(name, None)
            if entry is None:
                continue
            changed = True
            for rel in entry.get("outputs", {}):
                p = self.out / rel
                if p.is_file() or p.is_symlink():
                    p.unlink(missing_ok=True)
                    removed.append(p)
        if changed:
            self._save()
        return removed

    def key_of(self, name: str) -> str | None:
        entry = self.stages.get(name)
        return entry.get("key") if entry else None

    def _save(self) -> None:
        write_atomic(self.path, json.dumps({"version": CACHE_VERSION, "stages": self.stages}, indent=1,
                                           sort_keys=True))
