"""What ``sgsc compress`` prints: the per-layer table of its manifest and the lines under it (accuracy or a
language model's loss and perplexity, size, where the artifact is). Plain data in, text out: no torch, so the
output is tested from a manifest alone; rows are rendered by the one text-table renderer,
``_tables.render_rows``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

from sgsc_export._tables import render_rows

__all__ = ["AllWeights", "all_weights", "compress_summary", "layer_table"]


class AllWeights(NamedTuple):
    bits: int  # stored: the quantised layers' bits + 32 per float weight
    weights: int  # of the starting model, quantised and float
    float_weights: int
    float_bits: int
    ratio: float


def all_weights(totals: dict[str, Any]) -> AllWeights:
    """The manifest's totals over all of the model's weights, a float weight at 32 bits. A manifest written
    before ``ratio_all_weights`` existed does not say which weights stayed float, and reads as its quantised
    layers alone."""
    n_float = int(totals.get("float_weights", 0))
    float_bits = int(totals.get("float_bits", 32 * n_float))
    return AllWeights(int(totals["quantized_bits"]) + float_bits,
                      int(totals.get("weights_all", totals["weights_start"])), n_float, float_bits,
                      float(totals.get("ratio_all_weights", totals["ratio"])))


def layer_table(manifest: dict[str, Any]) -> str:
    """One row per quantised layer (kind, shape, channels kept, average and stored bits), one for the weights
    that stay float (32 bits each), and the total over all weights: its ratio is the all-weights ratio."""
    rows = [("layer", "kind", "shape", "kept/before", "avg bits", "stored bits", "ratio")]
    for layer in manifest["layers"]:
        n = max(1, len(layer["bits"]))
        rows.append((layer["name"], layer["kind"], "x".join(map(str, layer["weight_shape"])),
                     f"{layer['channels_kept']}/{layer['channels_before']}", f"{sum(layer['bits']) / n:.2f}",
                     str(layer["stored_bits"]), ""))
    a = all_weights(manifest["totals"])
    if a.float_weights:
        rows.append((f"stays float ({len(manifest.get('float_weights', []))} tensors)", "",
                     f"{a.float_weights} weights", "", "32.00", str(a.float_bits), ""))
    rows.append(("total, all weights", "", "", "", f"{a.bits / a.weights:.3f}/w", str(a.bits),
                 f"{a.ratio:.4f}"))
    return "\n".join(render_rows(rows))


def target_line(manifest: dict[str, Any]) -> str | None:
    """The accuracy target's result in one line (``None``: the run had no validation split)."""
    t = manifest.get("target")
    if not t:
        return None
    v = t["validation"]
    what = "samples of x_val" if v.get("source") == "x_val" else "held-out training samples"
    return (f"drop {t['drop']:.3f} {t['unit']} on the validation split ({v['n']} {what}), "
            f"target --max-drop {t['max_drop']:g}: {'met' if t['met'] else 'NOT met'}")


def compress_summary(manifest: dict[str, Any], out: Path, seconds: float) -> list[str]:
    """The lines after the table: float against compressed, the size, the restore events, the target, the
    artifact."""
    m = manifest
    target = target_line(m)
    f, c = m["metrics"]["float"], m["metrics"]["compressed"]
    a = all_weights(m["totals"])
    floats = f", {a.float_weights} of them float" if a.float_weights else ""
    size = (f"{a.bits} bits of {32 * a.weights} fp32 bits (all {a.weights} weights{floats}): "
            f"ratio {a.ratio:.4f}; {len(m['restores'])} restore event(s)")
    if m["model"]["task"] == "language_model":
        lines = [f"{split:<12} loss float {f[split + '_loss']:.4f}  compressed {c[split + '_loss']:.4f}   "
                 f"perplexity {f[split + '_perplexity']:.3f} → {c[split + '_perplexity']:.3f}   "
                 f"next-token acc. {f[split + '_accuracy']:.4f} → {c[split + '_accuracy']:.4f}"
                 for split in ("test", "preservation")]
        return [*lines, f"size         {size}", *([f"target       {target}"] if target else []),
                f"artifact     {out}  ({seconds:.1f} s)"]
    return [f"test accuracy      float {f['test_accuracy']:.4f}  compressed {c['test_accuracy']:.4f}",
            f"preservation acc.  float {f['preservation_accuracy']:.4f}  compressed "
            f"{c['preservation_accuracy']:.4f}  ({m['preservation']['size']} training samples)",
            f"size               {size}",
            *([f"target             {target}"] if target else []),
            f"artifact           {out}  ({seconds:.1f} s)"]
