"""What ``sgsc compress`` prints: the per-layer table of its manifest and the lines under it (accuracy or a
language model's loss and perplexity, size, where the artifact is). Plain data in, text out: no torch, so the
output is tested from a manifest alone; rows are rendered by the one text-table renderer,
``_tables.render_rows``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sgsc_export._tables import render_rows

__all__ = ["compress_summary", "layer_table"]


def layer_table(manifest: dict[str, Any]) -> str:
    """One row per quantised layer (kind, shape, channels kept, average and stored bits) and the total."""
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


def compress_summary(manifest: dict[str, Any], out: Path, seconds: float) -> list[str]:
    """The lines after the table: float against compressed, the size, the restore events, the artifact."""
    m = manifest
    f, c = m["metrics"]["float"], m["metrics"]["compressed"]
    size = (f"{m['totals']['quantized_bits']} bits of {m['totals']['fp32_bits']} fp32 bits: "
            f"ratio {m['totals']['ratio']:.4f}; {len(m['restores'])} restore event(s)")
    if m["model"]["task"] == "language_model":
        lines = [f"{split:<12} loss float {f[split + '_loss']:.4f}  compressed {c[split + '_loss']:.4f}   "
                 f"perplexity {f[split + '_perplexity']:.3f} → {c[split + '_perplexity']:.3f}   "
                 f"next-token acc. {f[split + '_accuracy']:.4f} → {c[split + '_accuracy']:.4f}"
                 for split in ("test", "preservation")]
        return [*lines, f"size         {size}", f"artifact     {out}  ({seconds:.1f} s)"]
    return [f"test accuracy      float {f['test_accuracy']:.4f}  compressed {c['test_accuracy']:.4f}",
            f"preservation acc.  float {f['preservation_accuracy']:.4f}  compressed "
            f"{c['preservation_accuracy']:.4f}  ({m['preservation']['size']} training samples)",
            f"size               {size}",
            f"artifact           {out}  ({seconds:.1f} s)"]
