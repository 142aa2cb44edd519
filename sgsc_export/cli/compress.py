"""``sgsc compress``: a PyTorch model and its data → the artifact directory OUT.

The compression options are made from ``CompressConfig``'s fields (``_COMPRESSION``: which of them the command
offers); a value left unset takes the default (the same for every data set), or ``--preset NAME``'s
(``sgsc_export.presets``, earlier per-data-set starting points), and every range is the
config's own check, so a bad ``--gamma`` is the same one line here, in the pipeline and in the API. Before any
work: an ``--out`` that would overwrite an input is refused, and the run directory's lock is taken (one sgsc
run at a time). Torch is imported when the command runs, not when ``--help`` lists it.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from sgsc_export.cli import Command, Failure
from sgsc_export.cli._options import field_option, fields_of
from sgsc_export.config import MAX_THREADS, CompressConfig
from sgsc_export.presets import PRESETS

PRESET_NAMES = tuple(PRESETS)

__all__ = ["compress_cmd", "compress_inputs"]

# the files `sgsc compress` writes into OUT (none may be one of its inputs)
_WRITES = ("manifest.json", "history.json", "model.safetensors", "quant.safetensors", "preservation.npz",
           "eval.npz", "checkpoints/last.pt")
_COMPRESSION = ("steps", "epochs", "min_steps", "finetune_steps", "float_epochs", "gamma", "lam", "init_bits",
                "distill", "max_drop", "validation_size", "dual_lr", "preservation_size", "exclude", "seed")


def compress_inputs(dataset: str, weights, model_spec: str | None, preservation_file=None) -> dict:
    """The input files of a compression, by the option that names them (for ``check_outputs``)."""
    return {"--dataset's file": dataset.partition(":")[2] if dataset.startswith(("npz:", "text:")) else None,
            "--weights": weights, "--preservation-file": preservation_file,
            "--model's file": (model_spec or "").rpartition(":")[0] or None}


def _compression_options(fn):
    fields = fields_of(CompressConfig)
    for name in reversed(_COMPRESSION):
        if name == "exclude":
            fn = field_option(fields[name], multiple=True, help_suffix=" Repeatable, one name each.")(fn)
        else:
            fn = field_option(fields[name], default=None)(fn)
    return fn


@click.command("compress", cls=Command)
@click.option("--dataset", default="digits", show_default=True,
              help="digits | mnist | npz:PATH | names | text:PATH")
@click.option("--data-dir", type=click.Path(path_type=Path),
              help="Directory of the data set's files (mnist, names).")
@click.option("--preservation-file", type=click.Path(path_type=Path),
              help="Text data sets: use this file's lines (e.g. the paper's hardest_examples.txt) as the "
                   "preservation set.")
@click.option("--model", "model_spec",
              help="Your model: path/to/file.py:factory (default: built-in for the data "
                                            "set).")
@click.option("--weights", type=click.Path(path_type=Path),
              help="Float weights (state dict) for --model; skips float training.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Artifact directory to write.")
@click.option("--preset", "preset_name", type=click.Choice(sorted(PRESET_NAMES)),
              help="Start from an earlier release's per-data-set settings (nobody needs one: the defaults "
                   "hold for every data set).")
@_compression_options
@click.option("--resume", is_flag=True, help="Continue from OUT/checkpoints/last.pt.")
@click.option("--threads", type=click.IntRange(0, MAX_THREADS), default=1, show_default=True,
              help="torch intra-op threads (0: torch's default). One is fastest for small models.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def compress_cmd(dataset: str, data_dir: Path | None, preservation_file: Path | None, model_spec: str | None,
                 weights: Path | None, out: Path, preset_name: str | None, resume: bool, threads: int,
                 quiet: bool, **options) -> None:
    """Compress a model with SGSC and write the artifact directory OUT."""
    from sgsc_export._outputs import check_out_dir, check_outputs, lock_run_dir
    from sgsc_export.cli.pipeline.run import remove_partial_files

    check_out_dir(out)
    inputs = compress_inputs(dataset, weights, model_spec, preservation_file)
    check_outputs({f"--out's {name}": out / name for name in _WRITES}, inputs)
    with lock_run_dir(out, "sgsc compress") as held:
        if held.stale is not None:
            remove_partial_files(out)
            click.echo(held.stale_note(), err=True)
        try:
            _compress(dataset, data_dir, preservation_file, model_spec, weights, out, resume, threads, quiet,
                      options, preset_name)
        except KeyboardInterrupt:
            remove_partial_files(out)
            raise


def _compress(dataset, data_dir, preservation_file, model_spec, weights, out, resume, threads, quiet,
              options, preset_name) -> None:
    from sgsc_export._outputs import check_out_dir
    from sgsc_export._threads import limit_threads
    from sgsc_export.cli.tables import compress_summary, layer_table
    from sgsc_export.datasets.images import load_dataset
    from sgsc_export.models import build_model, default_factory, default_kwargs, load_weights
    from sgsc_export.presets import preset
    from sgsc_export.train.compress import compress as run

    limit_threads(threads)
    t0 = time.perf_counter()
    check_out_dir(out)  # before any work: a bad --out must not cost a data load and a float training
    if resume and not (out / "checkpoints" / "last.pt").is_file():
        raise click.UsageError(f"--resume: no checkpoint at {out / 'checkpoints' / 'last.pt'}")
    overrides = {k: v for k, v in options.items() if v is not None and k != "exclude"}
    if options["exclude"]:
        overrides["exclude"] = tuple(options["exclude"])
    # the config is checked before the data is loaded (a bad --seed must not reach the data set's split)
    base = preset(preset_name).to_dict() if preset_name else {}
    config = CompressConfig.from_dict({**base, **overrides})
    seed = options["seed"]
    data = load_dataset(dataset, data_dir, seed=0 if seed is None else seed)
    if preservation_file is not None:
        if getattr(data, "task", "") != "language_model":
            raise click.UsageError("--preservation-file applies to text data sets (names, text:PATH)")
        from sgsc_export.datasets.text import with_preservation_file

        data = with_preservation_file(data, preservation_file)
    spec = model_spec or default_factory(dataset.split(":")[0])
    kwargs = default_kwargs(data) if model_spec is None else {}
    model, digest = build_model(spec, kwargs)
    if weights is not None:
        load_weights(model, weights)
    factory = spec if model_spec is None else str(Path(spec.rpartition(":")[0]).resolve()) + ":" \
        + spec.rpartition(":")[2]
    art = run(model, data, config, out_dir=out, pretrained=weights is not None, resume=resume,
              progress=not quiet and sys.stderr.isatty(),
              model_spec={"factory": factory, "kwargs": kwargs, "source_sha256": digest})
    click.echo(layer_table(art.manifest))
    for line in compress_summary(art.manifest, out, time.perf_counter() - t0):
        click.echo(line)
    target = art.manifest.get("target")
    if target and not target["met"]:  # the artifact is written and usable; the run did not meet its target
        raise Failure(f"target not met: the compressed model loses {target['drop']:.3f} {target['unit']} "
                      f"on the validation split, more than --max-drop {target['max_drop']:g}; the artifact "
                      f"in {out} is written: raise --max-drop, or train longer (--epochs, --min-steps) or "
                      "gentler (--gamma)", 1, prefix="")
