"""The ``sgsc`` command line: the one place that sees all three packages.

Heavy parts (torch training, onnx, onnxruntime) are imported only when a command runs. Every ``SGSCError``
becomes one line on stderr and exit code 2; a failed check is exit code 1. Any other exception is one line naming
its type, exit code 2 (never a traceback). Ctrl-C is exit code 130 and SIGTERM exit code 143 (128 + the signal),
each with one line; every file is written through a temp file, so neither leaves a half-written one.
"""

from __future__ import annotations

import functools
import importlib
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import click

from sgsc_export import __version__
from sgsc_export._tables import render_rows
from sgsc_export.errors import SGSCError, user_code_exit

# name → "module:attribute" of a click.Command, imported on first use
_LAZY = {
    "export": "sgsc_export.cli.export:export_cmd",
    "inspect": "sgsc_export.cli.export:inspect_cmd",
    "validate": "sgsc_export.cli.validate:validate_cmd",
    "pipeline": "sgsc_export.cli.pipeline.cli:pipeline_cmd", "config": "sgsc_export.cli.pipeline.cli:config_cmd",
}


class _Group(click.Group):
    """Loads the other packages' commands lazily, and turns typed errors into one-line messages."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(_LAZY))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        cmd = super().get_command(ctx, name)
        if cmd is not None or name not in _LAZY:
            return cmd
        module, _, attr = _LAZY[name].partition(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            return _unavailable(name, f"{module} is not available ({exc})")

    def invoke(self, ctx: click.Context):
        previous = _catch_sigterm()
        try:
            return super().invoke(ctx)
        except SGSCError as exc:
            click.echo("error: " + " ".join(str(exc).split("\n")), err=True)  # one line, always
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt as exc:  # Ctrl-C (130) or SIGTERM (143), instead of click's `Aborted!` and 1
            code = getattr(exc, "exit_code", 130)
            what = "terminated (SIGTERM)" if code == 143 else "interrupted (Ctrl-C)"
            click.echo(f"{what}: stopped; no half-written file is left", err=True)
            ctx.exit(code)
        except click.UsageError as exc:  # a bad flag or value: one line too, not click's three
            where = exc.ctx.command_path if exc.ctx is not None else "sgsc"
            click.echo(f"error: {' '.join(exc.format_message().split())} (see `{where} --help`)", err=True)
            ctx.exit(exc.exit_code)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as exc:  # noqa: BLE001 - one line, never a traceback (the type says where to look)
            text = str(exc).splitlines()[0] if str(exc).strip() else "(no message)"
            click.echo(f"error: unexpected {type(exc).__name__}: {text}", err=True)
            ctx.exit(2)
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process is, like Ctrl-C: every writer removes its temp file. Exit code 143."""

    exit_code = 143


def _on_sigterm(signum, frame) -> None:
    raise Terminated()


def _catch_sigterm():
    """Make SIGTERM raise ``Terminated`` (main thread only); returns the previous handler, or None."""
    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        return signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError):
        return None


_COMPRESS_WRITES = ("manifest.json", "history.json", "model.safetensors", "quant.safetensors", "preservation.npz",
                    "eval.npz", "checkpoints/last.pt")


def _compress_outputs_checked(fn: Callable) -> Callable:
    """``sgsc compress``: refuse an --out that would destroy an input, before any work; hold the run directory's
    lock (one sgsc run at a time); a user's ``sys.exit`` is an error; Ctrl-C leaves no temp file."""

    @functools.wraps(fn)
    def wrapper(**params):
        from sgsc_export._io import check_out_dir, check_outputs, lock_run_dir
        from sgsc_export.cli.pipeline.run import remove_partial_files

        out: Path = params["out"]
        check_out_dir(out)
        dataset = params.get("dataset") or ""
        inputs = {"--dataset's file": dataset.partition(":")[2] if dataset.startswith(("npz:", "text:")) else None,
                  "--weights": params.get("weights"), "--preservation-file": params.get("preservation_file"),
                  "--model's file": (params.get("model_spec") or "").rpartition(":")[0] or None}
        check_outputs({f"--out's {name}": out / name for name in _COMPRESS_WRITES}, inputs)
        with lock_run_dir(out, "sgsc compress") as held:
            if held.stale is not None:
                remove_partial_files(out)
                click.echo(held.stale_note(), err=True)
            try:
                return fn(**params)
            except SystemExit as exc:
                raise user_code_exit(exc, "compress") from None
            except KeyboardInterrupt:
                remove_partial_files(out)
                raise

    return wrapper


def _unavailable(name: str, why: str) -> click.Command:
    @click.command(name, help=f"(unavailable: {why})", context_settings={"ignore_unknown_options": True})
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def cmd(args: tuple[str, ...]) -> None:
        click.echo(f"error: `sgsc {name}` is unavailable: {why}", err=True)
        sys.exit(2)

    return cmd


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="sgsc")
def main() -> None:
    """Safety-Guided Self-Compression: compress PyTorch models, export them to ONNX, validate them in onnxruntime."""


def _table(manifest: dict) -> str:
    rows = [("layer", "kind", "shape", "kept/before", "avg bits", "stored bits", "ratio")]
    for layer in manifest["layers"]:
        n = max(1, len(layer["bits"]))
        rows.append((layer["name"], layer["kind"], "x".join(map(str, layer["weight_shape"])),
                     f"{layer['channels_kept']}/{layer['channels_before']}", f"{sum(layer['bits']) / n:.2f}",
                     str(layer["stored_bits"]), ""))
    t = manifest["totals"]
    rows.append(("total", "", "", "", f"{t['quantized_bits'] / t['weights_start']:.3f}/w",
                 str(t["quantized_bits"]), f"{t['ratio']:.4f}"))
    return "\n".join(render_rows(rows))


@main.command()
@click.option("--dataset", default="digits", show_default=True, help="digits | mnist | npz:PATH | names | text:PATH")
@click.option("--data-dir", type=click.Path(path_type=Path), help="Directory of the data set's files (mnist, names).")
@click.option("--preservation-file", type=click.Path(path_type=Path),
              help="Text data sets: use this file's lines (e.g. the paper's hardest_examples.txt) as the preservation set.")
@click.option("--model", "model_spec", help="Your model: path/to/file.py:factory (default: built-in for the data set).")
@click.option("--weights", type=click.Path(path_type=Path), help="Float weights (state dict) for --model; skips float training.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Artifact directory to write.")
@click.option("--steps", type=int, help="Compression steps.")
@click.option("--finetune-steps", type=int, help="Steps with bits frozen, after compression.")
@click.option("--float-epochs", type=int, help="Epochs of float reference training.")
@click.option("--gamma", type=float, help="γ, weight of the size term Q.")
@click.option("--lam", type=float, help="λ, weight of the preservation loss (0 = plain self-compression).")
@click.option("--init-bits", type=float, help="Starting bit-depth of every channel.")
@click.option("--distill", type=float, help="κ, weight of distillation from the float reference (0 = off).")
@click.option("--preservation-size", type=int, help="Samples in the preservation set (default min(10%, 1000)).")
@click.option("--exclude", multiple=True, help="Layer name to keep in float (repeatable).")
@click.option("--seed", type=int, help="Seed: same seed, same artifact.")
@click.option("--resume", is_flag=True, help="Continue from OUT/checkpoints/last.pt.")
@click.option("--threads", type=click.IntRange(0, 1024), default=1, show_default=True,
              help="torch intra-op threads (0: torch's default). One is fastest for small models.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@_compress_outputs_checked
def compress(dataset, data_dir, preservation_file, model_spec, weights, out, steps, finetune_steps, float_epochs, gamma,
             lam, init_bits, distill, preservation_size, exclude, seed, resume, threads, quiet) -> None:
    """Compress a model with SGSC and write the artifact directory OUT."""
    import time

    from sgsc_export._io import check_out_dir
    from sgsc_export.config import CompressConfig
    from sgsc_export.datasets.images import load_dataset
    from sgsc_export.models import build_model, default_factory, default_kwargs, load_weights
    from sgsc_export.presets import preset
    from sgsc_export.train.compress import compress as run

    if threads:
        import torch

        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    check_out_dir(out)  # before any work: a bad --out must not cost a data load and a float training
    if resume and not (out / "checkpoints" / "last.pt").is_file():
        raise click.UsageError(f"--resume: no checkpoint at {out / 'checkpoints' / 'last.pt'}")
    overrides = {k: v for k, v in dict(steps=steps, finetune_steps=finetune_steps, float_epochs=float_epochs,
                                       gamma=gamma, lam=lam, init_bits=init_bits, seed=seed, distill=distill,
                                       preservation_size=preservation_size).items() if v is not None}
    if exclude:
        overrides["exclude"] = tuple(exclude)
    # the config is checked before the data is loaded (a bad --seed must not reach the data set's split)
    config = CompressConfig.from_dict({**preset(dataset.split(":")[0]).to_dict(), **overrides})
    data = load_dataset(dataset, data_dir, seed=0 if seed is None else seed)
    if preservation_file is not None:
        if getattr(data, "task", "") != "language_model":
            raise click.UsageError("--preservation-file applies to text data sets (names, text:PATH)")
        from sgsc_export.datasets.text import with_preservation_file

        data = with_preservation_file(data, preservation_file)
    spec = model_spec or default_factory(dataset.split(":")[0])
    model, digest = build_model(spec, default_kwargs(data) if model_spec is None else {})
    if weights is not None:
        load_weights(model, weights)
    factory_spec = spec if model_spec is None else str(Path(spec.rpartition(":")[0]).resolve()) + ":" + spec.rpartition(":")[2]
    art = run(model, data, config, out_dir=out, pretrained=weights is not None, resume=resume,
              progress=not quiet and sys.stderr.isatty(),
              model_spec={"factory": factory_spec,
                          "kwargs": default_kwargs(data) if model_spec is None else {},
                          "source_sha256": digest})
    m = art.manifest
    click.echo(_table(m))
    f, c = m["metrics"]["float"], m["metrics"]["compressed"]
    if m["model"]["task"] == "language_model":
        for split in ("test", "preservation"):
            click.echo(f"{split:<12} loss float {f[split + '_loss']:.4f}  compressed {c[split + '_loss']:.4f}   "
                       f"perplexity {f[split + '_perplexity']:.3f} → {c[split + '_perplexity']:.3f}   "
                       f"next-token acc. {f[split + '_accuracy']:.4f} → {c[split + '_accuracy']:.4f}")
        click.echo(f"size         {m['totals']['quantized_bits']} bits of {m['totals']['fp32_bits']} fp32 bits: "
                   f"ratio {m['totals']['ratio']:.4f}; {len(m['restores'])} restore event(s)")
        click.echo(f"artifact     {out}  ({time.perf_counter() - t0:.1f} s)")
        return
    click.echo(f"test accuracy      float {f['test_accuracy']:.4f}  compressed {c['test_accuracy']:.4f}")
    click.echo(f"preservation acc.  float {f['preservation_accuracy']:.4f}  compressed {c['preservation_accuracy']:.4f}"
               f"  ({m['preservation']['size']} training samples)")
    click.echo(f"size               {m['totals']['quantized_bits']} bits of {m['totals']['fp32_bits']} fp32 bits: "
               f"ratio {m['totals']['ratio']:.4f}; {len(m['restores'])} restore event(s)")
    click.echo(f"artifact           {out}  ({time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    main()
