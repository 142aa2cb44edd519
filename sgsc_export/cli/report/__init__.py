"""The run report: ``OUT/report.html`` (one self-contained file: images inline, no script, no network),
``OUT/report.md`` and the pictures as ``OUT/figures/*.png``.

Reads only the run directory's JSON files (manifest.json, history.json, onnx/<profile>.json,
validation/<profile>.json), so it needs neither torch, onnx nor onnxruntime; matplotlib draws the pictures.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["FIGURES", "REPORT_VERSION", "RunData", "write_report"]

REPORT_VERSION = 1

# file stem → (title, what it shows)
FIGURES = {
    "bits_heatmap": ("Bit-depth of every channel",
                     "Each row is a quantised layer, each cell one output channel, coloured by its stored "
                     "bits. Hatched grey cells are channels removed by pruning."),
    "channels_kept": ("Channels kept per layer", "Output channels before compression and after it."),
    "accuracy_vs_size": ("Accuracy versus size over training",
                         "Preservation-set accuracy against the weights' stored size at each logged step "
                         "(colour: step); stars mark the float model, diamonds the final compressed model."),
    "preservation": ("Preservation accuracy over training",
                     "Preservation-set accuracy by step; red lines are restore events (+n: channels "
                     "revived), the dashed line is the float model, the dotted line the average bits per "
                     "weight."),
    "target": ("The accuracy target and γ over training",
               "Drop of the headline metric on the validation split at each check (left, against the "
               "--max-drop line) and γ, the weight of the size term that the controller moves (right, log "
               "scale); the ringed check is the one the fine-tune phase continued from."),
    "export_sizes": ("Size per layer of each exported profile",
                     "Weight bytes per layer in fp32 (of the channels kept after pruning) and as stored by "
                     "each ONNX profile (log scale); the legend gives each whole file."),
}


@dataclass
class RunData:
    """The JSON files of one run directory."""

    out: Path
    manifest: dict[str, Any]
    history: dict[str, Any]
    exports: dict[str, dict[str, Any]] = field(default_factory=dict)
    validations: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def read(cls, out: str | Path, profiles: tuple[str, ...] | list[str]) -> RunData:
        out = Path(out)
        from sgsc_export.errors import ArtifactError

        try:
            manifest = json.loads((out / "manifest.json").read_text())
            history_path = out / "history.json"
            history = json.loads(history_path.read_text()) if history_path.is_file() else {}
            exports = {p: json.loads((out / "onnx" / f"{p}.json").read_text()) for p in profiles
                       if (out / "onnx" / f"{p}.json").is_file()}
            validations = {p: json.loads((out / "validation" / f"{p}.json").read_text()) for p in profiles
                           if (out / "validation" / f"{p}.json").is_file()}
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"cannot read the run directory {out} for the report: {exc}") from exc
        return cls(out, manifest, history, exports, validations)


def draw(run: RunData) -> dict[str, bytes]:
    """Every picture that the run's data allows, as PNG bytes by file stem."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        from sgsc_export.errors import SGSCError

        raise SGSCError(f"the report needs matplotlib ({exc}); `pip install matplotlib`, or run with "
                        "--no-report") from None
    from sgsc_export.cli.report import plots

    pictures = {"bits_heatmap": plots.bits_heatmap(run.manifest),
                "channels_kept": plots.channels_kept(run.manifest),
                "accuracy_vs_size": plots.accuracy_vs_size(run.manifest, run.history),
                "preservation": plots.preservation_over_training(run.manifest, run.history)}
    if run.manifest.get("target"):
        pictures["target"] = plots.target_over_training(run.manifest, run.history)
    if run.exports:
        pictures["export_sizes"] = plots.export_sizes(run.exports)
    return pictures


def write_report(out: str | Path, profiles: tuple[str, ...] | list[str]) -> list[Path]:
    """Write the PNGs, report.md and report.html (each atomically); return the paths written."""
    from sgsc_export.cli.pipeline.cache import write_atomic
    from sgsc_export.cli.report.html import render_html
    from sgsc_export.cli.report.markdown import render_markdown

    run = RunData.read(out, profiles)
    pictures = draw(run)
    written = []
    for stem, png in pictures.items():
        path = run.out / "figures" / f"{stem}.png"
        write_atomic(path, png)
        written.append(path)
    for name, text in (("report.md", render_markdown(run, list(pictures))),
                       ("report.html", render_html(run, pictures))):
        write_atomic(run.out / name, text)
        written.append(run.out / name)
    return written
