"""``run_pipeline``: compress → export (each profile) → validate (each profile) → report, in one run
directory.

This module is part of the command line layer (DESIGN.md: the CLI is the one place that sees all three
packages): it imports ``converters`` and ``runtime_checks`` inside the stage functions only, and
``sgsc_export/__init__`` does not import it. Each stage is keyed by a content hash of its inputs and config
(``cache.StageCache``) and is skipped, with a message, when the key and its outputs are unchanged.

Layout of ``OUT``: the artifact itself (manifest.json, …, checkpoints/last.pt; ``sgsc export OUT`` works on
it), ``onnx/<profile>.onnx`` + ``.json`` (size table), ``validation/<profile>.json`` / ``.md`` /
``.junit.xml``, ``report.html``, ``report.md``, ``figures/*.png``, and ``pipeline.json`` (the stage keys).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sgsc_export import __version__
from sgsc_export._outputs import check_out_dir, check_outputs, lock_run_dir, write_atomic_many
from sgsc_export._threads import limit_threads
from sgsc_export.cli.compress import compress_inputs
from sgsc_export.cli.pipeline.cache import StageCache, file_sha256, hash_json, write_atomic
from sgsc_export.cli.pipeline.config import VALIDATION, PipelineConfig
from sgsc_export.errors import ConfigError, user_code_exit

__all__ = ["ARTIFACT_FILES", "PipelineResult", "StageRun", "run_pipeline"]

ARTIFACT_FILES = ("manifest.json", "history.json", "model.safetensors", "quant.safetensors",
                  "preservation.npz",
                  "eval.npz")
Echo = Callable[[str], None]


@dataclass
class StageRun:
    """One stage of one run: reused or done, and how long it took."""

    name: str
    reused: bool
    seconds: float


@dataclass
class PipelineResult:
    """What a pipeline run produced; every path is inside ``out``."""

    out: Path
    config: PipelineConfig
    manifest: dict[str, Any]
    exports: dict[str, dict[str,
                            Any]] = field(default_factory=dict)      # profile → size table (+ path, sha256)
    validations: dict[str, dict[str, Any]] = field(default_factory=dict)  # profile → report.json content
    stages: list[StageRun] = field(default_factory=list)
    report_html: Path | None = None
    report_md: Path | None = None

    @property
    def status(self) -> str:
        """``passed`` only when every profile passed and the compression met its ``max_drop`` target;
        ``error`` wins over ``failed``."""
        from runtime_checks.gate import verdict

        target = (self.manifest or {}).get("target")
        unmet = ["failed"] if target and not target.get("met", True) else []
        return verdict([*(v.get("status", "error") for v in self.validations.values()), *unmet])

    @property
    def exit_code(self) -> int:
        from runtime_checks.gate import exit_code

        return exit_code(self.status)


def _module_sha(spec: str) -> str | None:
    """SHA-256 of the source file behind a ``package.module:factory`` spec (the built-in models)."""
    module = sys.modules.get(spec.rpartition(":")[0]) or importlib.import_module(spec.rpartition(":")[0])
    path = getattr(module, "__file__", None)
    return file_sha256(path) if path else None


def _data_sha(data: Any) -> str:
    h = hashlib.sha256(data.name.encode())
    for arr in (data.x_train, data.y_train, data.x_test, data.y_test):
        h.update(str(arr.shape).encode() + str(arr.dtype).encode())
        h.update(memoryview(arr).cast("B") if arr.flags.c_contiguous else arr.tobytes())
    return h.hexdigest()


def _compress(cfg: PipelineConfig, out: Path, cache: StageCache, echo: Echo) -> StageRun:
    from sgsc_export.datasets.images import load_dataset
    from sgsc_export.models import build_model, default_factory, default_kwargs, load_weights
    from sgsc_export.train.compress import compress

    config = cfg.compress_config()
    limit_threads(cfg.torch_threads)
    data = load_dataset(cfg.dataset, cfg.data_dir, seed=cfg.seed)
    spec = cfg.model or default_factory(cfg.dataset.split(":")[0])
    kwargs = default_kwargs(data) if cfg.model is None else {}
    model, digest = build_model(spec, kwargs)
    key = hash_json({"data": _data_sha(data), "model": spec, "model_sha256": digest or _module_sha(spec),
                     "weights_sha256": file_sha256(cfg.weights) if cfg.weights else None,
                     "config": config.to_dict(), "torch_threads": cfg.torch_threads, "version": __version__})
    if not cfg.force and cache.fresh("compress", key):
        return StageRun("compress", True, 0.0)
    ckpt = out / "checkpoints" / "last.pt"
    if cfg.resume:
        if not ckpt.is_file():
            raise ConfigError(f"--resume: no checkpoint at {ckpt}; run without --resume")
        if cache.key_of("compress") != key:
            raise ConfigError(f"--resume: the checkpoint at {ckpt} was made with other inputs or config; "
                              "run without --resume to start over")
        echo(f"compress: resuming from {ckpt}")
    if cfg.weights:
        load_weights(model, cfg.weights)
    factory = spec if cfg.model is None else (str(Path(spec.rpartition(":")[0]).resolve()) + ":"
                                              + spec.rpartition(":")[2])
    t0 = time.perf_counter()
    _supersede(cache, out, "compress")  # a new artifact: no earlier ONNX file or report may stay beside it
    cache.started("compress", key)
    compress(model, data, config, out_dir=out, pretrained=cfg.weights is not None, resume=cfg.resume,
             progress=not cfg.quiet and sys.stderr.isatty(),
             model_spec={"factory": factory, "kwargs": kwargs, "source_sha256": digest})
    cache.done("compress", key, [out / name for name in ARTIFACT_FILES])
    return StageRun("compress", False, time.perf_counter() - t0)


def _export(cfg: PipelineConfig, out: Path, cache: StageCache, profile: str) -> StageRun:
    from converters.exporter import TOOLCHAIN_VERSION

    onnx_path, table_path = out / "onnx" / f"{profile}.onnx", out / "onnx" / f"{profile}.json"
    # ort-int8 chooses its quantised activations to keep the gate's thresholds: they are an input of the file
    targets = {"min_agreement": cfg.min_agreement, "max_accuracy_drop": cfg.max_accuracy_drop}
    key = hash_json({"manifest": file_sha256(out / "manifest.json"), "profile": profile,
                     "converters": TOOLCHAIN_VERSION, **(targets if profile == "ort-int8" else {})})
    name = f"export:{profile}"
    if not cfg.force and cache.fresh(name, key):
        return StageRun(name, True, 0.0)
    from converters import export
    from converters.passes.qdq_select import QDQTargets

    t0 = time.perf_counter()
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    # the user named cfg.model (None: a built-in); its SHA-256 is checked against the manifest's before it
    # runs
    result = export(out, onnx_path, profile=profile, model=cfg.model, qdq_targets=QDQTargets(**targets))
    table = {**result.table.to_dict(), "path": str(onnx_path.relative_to(out)), "sha256": result.sha256,
             "fused": result.fused}
    write_atomic(table_path, json.dumps(table, indent=1))
    cache.done(name, key, [onnx_path, table_path])
    return StageRun(name, False, time.perf_counter() - t0)


def _validate(cfg: PipelineConfig, out: Path, cache: StageCache, profile: str) -> StageRun:
    onnx_path = out / "onnx" / f"{profile}.onnx"
    paths = {ext: out / "validation" / f"{profile}.{ext}" for ext in ("json", "md", "junit.xml")}
    options = {k: cfg.to_dict()[k] for k in VALIDATION}
    key = hash_json({"onnx": file_sha256(onnx_path), "manifest": file_sha256(out / "manifest.json"),
                     "options": options, "version": __version__})
    name = f"validate:{profile}"
    if not cfg.force and cache.fresh(name, key):
        return StageRun(name, True, 0.0)
    from runtime_checks import EvalData, validate

    t0 = time.perf_counter()
    _supersede(cache, out, name)  # no earlier report of this profile survives a run that stops here
    report = validate(onnx_path, EvalData.from_run_dir(out), cfg.validate_config())
    write_atomic_many([(paths["json"], report.to_json()), (paths["md"], report.to_markdown()),
                       (paths["junit.xml"], report.to_junit())])
    cache.done(name, key, paths.values())
    return StageRun(name, False, time.perf_counter() - t0)


def _report(cfg: PipelineConfig, out: Path, cache: StageCache) -> StageRun:
    from sgsc_export.cli.report import REPORT_VERSION, write_report

    inputs = [out / "manifest.json", out / "history.json"]
    inputs += [out / "onnx" / f"{p}.json" for p in cfg.profiles]
    inputs += [out / "validation" / f"{p}.json" for p in cfg.profiles]
    key = hash_json({"inputs": {str(p.relative_to(out)): file_sha256(p) for p in inputs if p.is_file()},
                     "version": REPORT_VERSION})
    if not cfg.force and cache.fresh("report", key):
        return StageRun("report", True, 0.0)
    t0 = time.perf_counter()
    written = write_report(out, cfg.profiles)
    cache.done("report", key, written)
    return StageRun("report", False, time.perf_counter() - t0)


def run_pipeline(config: PipelineConfig, echo: Echo | None = None) -> PipelineResult:
    """Run every stage whose inputs changed; ``echo`` gets one line per stage."""
    echo = echo or (lambda line: print(line, file=sys.stderr))
    if not config.out:
        raise ConfigError("no run directory: give --out DIR (config key out, environment SGSC_OUT)")
    out = Path(config.out)
    check_out_dir(out)  # before any work: a path under a file, or an unwritable one, is one line
    inputs = compress_inputs(config.dataset, config.weights, config.model)
    check_outputs({f"--out's {name}": out / name for name in (*ARTIFACT_FILES, "checkpoints/last.pt",
                                                              "pipeline.json")}, inputs)
    with lock_run_dir(out, "sgsc pipeline") as held:
        if held.stale is not None:
            remove_partial_files(out)
            echo(held.stale_note())
        return _run_locked(config, out, echo)


def _run_locked(config: PipelineConfig, out: Path, echo: Echo) -> PipelineResult:
    cache = StageCache(out)
    stages: list[StageRun] = []

    def step(run: Callable[[], StageRun], label: str, name: str) -> None:
        if not config.quiet:
            echo(f"{label} …")
        try:
            stage = run()
        except SystemExit as exc:  # a user's model code called sys.exit: never an exit code of the gate
            _supersede(cache, out, name)
            raise user_code_exit(exc, name) from None
        except Exception:  # an erroring rerun leaves no earlier report saying "passed" (Ctrl-C: what it had
            _supersede(cache, out, name)  # started, compress or validate, was superseded when it started)
            raise
        stages.append(stage)
        if stage.reused:
            echo(f"{stage.name}: reused (inputs and config unchanged; --force redoes it)")
        elif not config.quiet:
            echo(f"{stage.name}: done in {stage.seconds:.1f} s")

    step(lambda: _compress(config, out, cache, echo), f"compress {config.dataset}", "compress")
    for profile in config.profiles:
        step(lambda p=profile: _export(config, out, cache, p), f"export {profile}", f"export:{profile}")
    for profile in config.profiles:
        step(lambda p=profile: _validate(config, out, cache, p), f"validate {profile}", f"validate:{profile}")
    if config.report:
        step(lambda: _report(config, out, cache), "report", "report")

    result = PipelineResult(out=out, config=config, manifest=json.loads((out / "manifest.json").read_text()),
                            stages=stages)
    for profile in config.profiles:
        result.exports[profile] = json.loads((out / "onnx" / f"{profile}.json").read_text())
        result.validations[profile] = json.loads((out / "validation" / f"{profile}.json").read_text())
    if config.report:
        result.report_html, result.report_md = out / "report.html", out / "report.md"
    return result


def _supersede(cache: StageCache, out: Path, name: str) -> list[Path]:
    """Remove what stage ``name`` supersedes when it is redone or fails: the recorded outputs of the stages
    after it (and its own, except compress's artifact, which stays until a new one replaces it), and the
    reports by name."""
    after = {"compress": lambda n: n != "compress",
             "export": lambda n: n in (name, f"validate:{name.partition(':')[2]}", "report"),
             "validate": lambda n: n in (name, "report"),
             "report": lambda n: n == "report"}[name.partition(":")[0]]
    names = [n for n in cache.stages if after(n)]
    removed = cache.supersede(names)
    reports = [out / "report.html", out / "report.md"]
    for n in {*names, name}:
        if n.startswith("validate:"):
            profile = n.partition(":")[2]
            reports += [out / "validation" / f"{profile}.{ext}" for ext in ("json", "md", "junit.xml")]
    if name == "compress" and (out / "validation").is_dir():
        reports += [p for p in (out / "validation").iterdir() if p.is_file()]
    for p in reports:
        if p.is_file():
            p.unlink()
            removed.append(p)
    return removed


def remove_partial_files(out: Path) -> list[Path]:
    """After an interrupt: the temp files the writers of this toolchain leave only when killed mid-write."""
    removed = []
    for directory in (out, out / "checkpoints", out / "onnx", out / "validation", out / "figures"):
        if not directory.is_dir():
            continue
        for p in directory.iterdir():
            if p.is_file() and (p.name.startswith(".") and ".tmp" in p.name or p.name.endswith(".pt.tmp")):
                p.unlink(missing_ok=True)
                removed.append(p)
    return removed
