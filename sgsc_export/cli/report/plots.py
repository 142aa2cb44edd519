"""The report's pictures, one function each: plain data in (manifest, history, size tables), PNG bytes out.

matplotlib with the Agg backend (no display); imported when a picture is drawn, not when the package is.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

__all__ = ["accuracy_vs_size", "bits_heatmap", "channels_kept", "export_sizes", "preservation_over_training",
           "target_over_training"]

DPI = 110


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    _plt().close(fig)
    return buf.getvalue()


def _plain_log_axis(axis) -> None:
    """Log scale with plain numbers on the major ticks and no labels on the minor ones (they overlap)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _label(layer: dict[str, Any]) -> str:
    return f"{layer['name']} ({layer['kind']})"


def bits_heatmap(manifest: dict[str, Any]) -> bytes:
    """Layers × output channels, colour = stored bits; channels removed by pruning hatched grey at the
    right."""
    plt = _plt()
    from matplotlib.colors import BoundaryNorm, ListedColormap
    from matplotlib.patches import Patch, Rectangle

    layers = manifest["layers"]
    width = max(layer["channels_before"] for layer in layers)
    grid = np.full((len(layers), width), np.nan)
    for i, layer in enumerate(layers):
        grid[i, :len(layer["bits"])] = layer["bits"]
    max_bits = max(8, int(np.nanmax(grid)) if np.isfinite(grid).any() else 8)
    cmap = ListedColormap(plt.get_cmap("viridis", max_bits + 1)(np.arange(max_bits
                                                                          + 1))).with_extremes(bad="white")
    fig, ax = plt.subplots(figsize=(min(14, 3 + width * 0.16), 1.2 + 0.55 * len(layers)))
    image = ax.imshow(np.ma.masked_invalid(grid), aspect="auto", cmap=cmap, interpolation="nearest",
                      norm=BoundaryNorm(np.arange(-0.5, max_bits + 1.5), max_bits + 1))
    for i, layer in enumerate(layers):
        kept, before = len(layer["bits"]), layer["channels_before"]
        if before > kept:
            ax.add_patch(Rectangle((kept - 0.5, i - 0.5), before - kept, 1, facecolor="#dddddd",
                                   edgecolor="#999999",
                                   hatch="///", linewidth=0.5))
    ax.set_yticks(range(len(layers)),
                  [f"{_label(layer)}\n{np.mean(layer['bits']) if layer['bits'] else 0:.2f} b avg, "
                                       f"{len(layer['bits'])}/{layer['channels_before']}"
                                       for layer in layers])
    ax.set_xlabel("output channel (kept channels in order; removed channels at the right)")
    ax.set_title("Bit-depth of every channel, by layer")
    bar = fig.colorbar(image, ax=ax, ticks=range(max_bits + 1), pad=0.02)
    bar.set_label("stored bits (0 = masked)")
    ax.legend(handles=[Patch(facecolor="#dddddd", edgecolor="#999999", hatch="///",
                             label="removed (pruned)")],
              loc="upper left", bbox_to_anchor=(0, -0.35 if len(layers) < 4 else -0.18), fontsize=8,
              frameon=False)
    return _png(fig)


def channels_kept(manifest: dict[str, Any]) -> bytes:
    """Per layer: output channels before compression, and kept after it."""
    plt = _plt()
    layers = manifest["layers"]
    y = np.arange(len(layers))
    before = np.array([layer["channels_before"] for layer in layers])
    kept = np.array([layer["channels_kept"] - layer.get("channels_masked", 0) for layer in layers])
    masked = np.array([layer.get("channels_masked", 0) for layer in layers])
    fig, ax = plt.subplots(figsize=(7.5, 1.2 + 0.5 * len(layers)))
    ax.barh(y, before, color="#d9d9d9", label="before")
    ax.barh(y, kept, color="#2b7bba", label="kept (non-zero bits)")
    ax.barh(y, masked, left=kept, color="#f4a261", label="kept but masked (0 bits)")
    for i in range(len(layers)):
        ax.text(before[i], i, f" {kept[i] + masked[i]}/{before[i]}", va="center", fontsize=9)
    ax.set_yticks(y, [_label(layer) for layer in layers])
    ax.invert_yaxis()
    ax.set_xlabel("output channels")
    ax.set_xlim(0, before.max() * 1.18)
    ax.set_title("Channels kept per layer")
    ax.legend(loc="lower right", fontsize=8)
    return _png(fig)


def _records(history: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in history.get("records", []) if "step" in r]


def accuracy_vs_size(manifest: dict[str, Any], history: dict[str, Any]) -> bytes:
    """Preservation accuracy against the weights' size along training; the float and final models marked."""
    plt = _plt()
    records = _records(history)
    metrics, totals = manifest["metrics"], manifest["totals"]
    kb = 1 / 8 / 1024
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    if records:
        size = np.array([r["quantized_bits"] for r in records]) * kb
        acc = np.array([r["preservation_accuracy"] for r in records])
        ax.plot(size, acc, color="#bbbbbb", linewidth=1, zorder=1)
        points = ax.scatter(size, acc, c=[r["step"] for r in records], cmap="plasma", s=18, zorder=2)
        fig.colorbar(points, ax=ax).set_label("training step")
    fsize, csize = totals["fp32_bits"] * kb, totals["quantized_bits"] * kb
    ax.scatter([fsize], [metrics["float"]["preservation_accuracy"]], marker="*", s=220, color="black",
               zorder=3, label=f"float model, preservation ({fsize:.1f} KB)")
    ax.scatter([fsize], [metrics["float"]["test_accuracy"]], marker="*", s=220, facecolor="white",
               edgecolor="black", zorder=3, label="float model, test")
    ax.scatter([csize], [metrics["compressed"]["preservation_accuracy"]], marker="D", s=60, color="#2b7bba",
               zorder=3, label=f"compressed, preservation ({csize:.2f} KB)")
    ax.scatter([csize], [metrics["compressed"]["test_accuracy"]], marker="D", s=60, facecolor="white",
               edgecolor="#2b7bba", zorder=3, label="compressed, test")
    ax.set_xscale("log")
    _plain_log_axis(ax.xaxis)
    ax.set_xlabel("weight size (KB, log scale; stored bits of the quantised layers)")
    ax.set_ylabel("accuracy")
    ax.set_title("Accuracy versus size over training")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    return _png(fig)


def preservation_over_training(manifest: dict[str, Any], history: dict[str, Any]) -> bytes:
    """Preservation accuracy (and average bits) by step; restore events as red lines, fine-tuning shaded."""
    plt = _plt()
    records = _records(history)
    fig, ax = plt.subplots(figsize=(7.5, 4.0))
    steps = [r["step"] for r in records]
    ax.plot(steps, [r["preservation_accuracy"] for r in records], marker=".", color="#2b7bba",
            label="preservation accuracy")
    ax.axhline(manifest["metrics"]["float"]["preservation_accuracy"], color="black", linestyle="--",
               linewidth=1, label="float model")
    restores = history.get("restores", manifest.get("restores", []))
    for i, event in enumerate(restores):
        revived = sum(event.get("revived", {}).values())
        ax.axvline(event["step"], color="#d62728", alpha=0.7, linewidth=1.2,
                   label="restore event" if i == 0 else None)
        ax.annotate(f"+{revived}", (event["step"], 0.02), xycoords=("data", "axes fraction"), color="#d62728",
                    fontsize=7, ha="center")
    fine = [r["step"] for r in records if r.get("finetune")]
    if fine:
        ax.axvspan(min(fine), max(fine), color="#eeeeee", label="fine-tuning (bits frozen)")
    ax.set_xlabel("training step")
    ax.set_ylabel("preservation-set accuracy")
    ax.set_title(f"Preservation accuracy over training ({len(restores)} restore event(s))")
    ax.grid(alpha=0.3)
    if records:
        right = ax.twinx()
        right.plot(steps, [r["avg_bits"] for r in records], color="#999999", linewidth=1, linestyle=":",
                   label="avg bits / weight")
        right.set_ylabel("average bits per starting weight", color="#777777")
        lines, labels = ax.get_legend_handles_labels()
        more, more_labels = right.get_legend_handles_labels()
        ax.legend(lines + more, labels + more_labels, fontsize=8, loc="lower right")
    return _png(fig)


def target_over_training(manifest: dict[str, Any], history: dict[str, Any]) -> bytes:
    """Validation drop per check against ``max_drop``, and γ on a log axis; the kept checks ringed."""
    plt = _plt()
    target = manifest["target"]
    records = [r for r in _records(history) if "validation_drop" in r]
    fig, ax = plt.subplots(figsize=(7.5, 4.0))
    steps = [r["step"] for r in records]
    ax.plot(steps, [r["validation_drop"] for r in records], marker=".", color="#2b7bba",
            label=f"validation drop ({target['unit']})")
    ax.axhline(target["max_drop"], color="#d62728", linestyle="--", linewidth=1,
               label=f"--max-drop {target['max_drop']:g}")
    choice = target.get("choice") or {}
    kept = [choice["compression_step"]] if "compression_step" in choice else []
    ringed = [r for r in records if r["step"] in kept]
    if ringed:
        ax.scatter([r["step"] for r in ringed], [r["validation_drop"] for r in ringed], s=120,
                   facecolors="none", edgecolors="black", zorder=3, label="kept")
    tried = {t.get("compression_step") for t in choice.get("tried", []) if isinstance(t, dict)}
    first = [r for r in records if r["step"] in tried and not r.get("finetune")]
    if first:  # fine-tuned first, past the target after it: the held-back candidate was fine-tuned instead
        ax.scatter([r["step"] for r in first], [r["validation_drop"] for r in first], s=120,
                   facecolors="none", edgecolors="#999999", zorder=3, label="tried first, not kept")
    fine = [r["step"] for r in records if r.get("finetune")]
    if fine:
        ax.axvspan(min(fine), max(fine), color="#eeeeee", label="fine-tuning (γ = 0)")
    ax.set_xlabel("training step")
    ax.set_ylabel(f"drop against the float model ({target['unit']})")
    met = "met" if target["met"] else "not met"
    ax.set_title(f"Accuracy target {met}: kept drop {target['drop']:.3g} {target['unit']}")
    ax.grid(alpha=0.3)
    trajectory = [(s, g) for s, g in target.get("gamma_trajectory", []) if g > 0]
    lines, labels = ax.get_legend_handles_labels()
    if trajectory:
        right = ax.twinx()
        right.plot([s for s, _ in trajectory], [g for _, g in trajectory], color="#999999", linewidth=1,
                   linestyle=":", marker="x", label="γ")
        right.set_yscale("log")
        right.set_ylabel("γ (weight of the size term)", color="#777777")
        more, more_labels = right.get_legend_handles_labels()
        lines, labels = lines + more, labels + more_labels
    ax.legend(lines, labels, fontsize=8, loc="upper left")
    return _png(fig)


def export_sizes(exports: dict[str, dict[str, Any]]) -> bytes:
    """Bytes per layer: fp32, and stored in each exported profile (log scale); file totals in the legend."""
    plt = _plt()
    profiles = list(exports)
    names = [row["name"] for row in exports[profiles[0]]["layers"]] if profiles else []
    fig, ax = plt.subplots(figsize=(7.5, 1.4 + 0.55 * max(1, len(names))))
    height = 0.8 / (len(profiles) + 1)
    y = np.arange(len(names))
    fp32 = [row["fp32_bytes"] for row in exports[profiles[0]]["layers"]] if profiles else []
    float_file = exports[profiles[0]]["totals"]["float_onnx_bytes"] if profiles else 0
    ax.barh(y, fp32, height, color="#d9d9d9",
            label=f"fp32, kept channels (float ONNX file {float_file / 1024:.1f} KB)")
    colours = ["#2b7bba", "#e76f51", "#2a9d8f", "#8d6cab"]
    for k, profile in enumerate(profiles):
        rows = {row["name"]: row for row in exports[profile]["layers"]}
        values = [rows[n]["stored_bytes"] if n in rows else 0 for n in names]
        file_kb = exports[profile]["totals"]["file_bytes"] / 1024
        ax.barh(y + (k + 1) * height, values, height, color=colours[k % len(colours)],
                label=f"{profile} (file {file_kb:.1f} KB)")
        for i, v in enumerate(values):
            ax.text(v, y[i] + (k + 1) * height, f" {v}", va="center", fontsize=7)
    ax.set_yticks(y + height * len(profiles) / 2, names)
    ax.invert_yaxis()
    ax.set_xscale("log")
    _plain_log_axis(ax.xaxis)
    ax.set_xlabel("weight bytes per layer (log scale)")
    ax.set_title("Size per layer of each exported profile")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16 if len(names) > 3 else -0.25),
              ncol=2, frameon=False)
    return _png(fig)
