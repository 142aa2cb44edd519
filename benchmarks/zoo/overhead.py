"""``python -m benchmarks.zoo.overhead --work DIR``: the compact files' bytes beyond their payload (issue 17,
item 5).

For every zoo unit under ``DIR`` (``DIR/<data set>/<model>/`` with ``sgsc/manifest.json`` and
``compact.onnx``, as ``python -m benchmarks.zoo --work DIR`` leaves them):

    payload  = Σ_layers Σ_c b_c · K / 8        (the learned bits, from the manifest)
    channels = Σ_layers channels kept          (each has a 4-byte scale)
    overhead = file bytes − payload − 4 · channels
    budget   = 10 % · (payload + 4 · channels) + 2 KiB

and what the overhead is made of in the file (the float initializers other than the scales, the graph's nodes,
the metadata). One JSON row per unit is appended to ``--results`` (default
``benchmarks/results/compact_overhead.jsonl``).
"""

from __future__ import annotations

import argparse
import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from benchmarks.units import ROOT


def measure(unit: Path) -> dict[str, Any]:
    import onnx

    manifest = json.loads((unit / "sgsc" / "manifest.json").read_text())
    path = unit / "compact.onnx"
    model = onnx.load(str(path))
    payload_bits = channels = 0
    for layer in manifest["layers"]:
        k = math.prod(layer["weight_shape"][1:])
        payload_bits += sum(layer["bits"]) * k
        channels += layer["weight_shape"][0]
    payload = payload_bits / 8
    size = path.stat().st_size
    floats = sum(len(t.SerializeToString()) for t in model.graph.initializer
                 if t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16))
    return {
        "model": unit.name, "dataset": unit.parent.name, "file_bytes": size, "payload_bytes": round(payload),
        "channels": channels, "overhead_bytes": round(size - payload - 4 * channels),
        "budget_bytes": round(0.1 * (payload + 4 * channels) + 2048),
        "float_initializer_bytes": floats,
        "node_bytes": sum(len(n.SerializeToString()) for n in model.graph.node),
        "metadata_bytes": sum(len(p.SerializeToString()) for p in model.metadata_props),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.zoo.overhead", description="compact overhead")
    p.add_argument("--work", type=Path, required=True, help="a zoo work directory (benchmarks.zoo --work)")
    p.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / "compact_overhead.jsonl")
    p.add_argument("--note", default="", help="free text stored with every row (e.g. the commit)")
    args = p.parse_args(argv)
    units = sorted(d for d in args.work.glob("*/*") if (d / "compact.onnx").is_file()
                   and (d / "sgsc" / "manifest.json").is_file())
    if not units:
        print(f"error: no zoo unit with compact.onnx and sgsc/manifest.json under {args.work}")
        return 2
    date = datetime.now(timezone.utc).isoformat(timespec="seconds")
    with args.results.open("a") as f:
        for unit in units:
            row = {**measure(unit), "note": args.note, "date": date}
            f.write(json.dumps(row, sort_keys=True) + "\n")
            within = "within" if row["overhead_bytes"] <= row["budget_bytes"] else "over"
            print(f"{row['dataset']}/{row['model']}: {row['file_bytes']} B = payload "
                  f"{row['payload_bytes']} + 4·{row['channels']} + overhead {row['overhead_bytes']} "
                  f"({within} budget {row['budget_bytes']}; float initializers "
                  f"{row['float_initializer_bytes']}, nodes {row['node_bytes']}, metadata "
                  f"{row['metadata_bytes']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
