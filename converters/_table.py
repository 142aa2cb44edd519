"""The per-layer table that ``sgsc export`` and ``sgsc inspect`` print, from rows both can build."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from sgsc_export._tables import render_rows

__all__ = ["LayerRow", "SizeTable"]


@dataclass(frozen=True)
class LayerRow:
    name: str
    shape: tuple[int, ...]
    fp32_bytes: int
    bits_histogram: dict[str, int]
    learned_bits: int
    stored_bytes: int
    container: str
    fused: str = ""
    activation: str = ""

    @property
    def avg_bits(self) -> float:
        n = 1
        for d in self.shape:
            n *= d
        return self.learned_bits / n if n else 0.0


@dataclass(frozen=True)
class SizeTable:
    """Rows plus the totals; ``float_onnx_bytes`` is the float model's file (estimated when unknown)."""

    rows: tuple[LayerRow, ...]
    file_bytes: int
    float_onnx_bytes: int
    float_estimated: bool = False
    profile: str = ""
    opset: int = 0

    @property
    def fp32_bytes(self) -> int:
        return sum(r.fp32_bytes for r in self.rows)

    @property
    def stored_bytes(self) -> int:
        return sum(r.stored_bytes for r in self.rows)

    @property
    def learned_bits(self) -> int:
        return sum(r.learned_bits for r in self.rows)

    @property
    def ratio(self) -> float:
        return self.file_bytes / self.float_onnx_bytes if self.float_onnx_bytes else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {
            "profile": self.profile, "opset": self.opset,
            "layers": [dict(asdict(r), shape=list(r.shape), avg_bits=r.avg_bits) for r in self.rows],
            "totals": {"fp32_bytes": self.fp32_bytes, "learned_bits": self.learned_bits,
                       "stored_bytes": self.stored_bytes, "file_bytes": self.file_bytes,
                       "float_onnx_bytes": self.float_onnx_bytes, "float_estimated": self.float_estimated,
                       "ratio_to_float_onnx": self.ratio},
        }

    def render(self) -> str:
        show_fused = any(r.fused for r in self.rows)
        show_act = any(r.activation for r in self.rows)
        head = ["layer", "shape", "fp32 bytes", "learned bits (avg; histogram)", "stored bytes", "container"]
        if show_act:
            head.append("activation")
        if show_fused:
            head.append("runs as")
        lines = []
        for r in self.rows:
            hist = " ".join(
                f"{b}:{n}" for b, n in sorted(r.bits_histogram.items(), key=lambda kv: int(kv[0]))
            )
            row = [
                r.name,
                "x".join(map(str, r.shape)),
                str(r.fp32_bytes),
                f"{r.avg_bits:.2f}; {hist}",
                str(r.stored_bytes),
                r.container,
            ]
            if show_act:
                row.append(r.activation)
            if show_fused:
                row.append(r.fused or "float")
            lines.append(row)
        total = [
            "total",
            "",
            str(self.fp32_bytes),
            f"{self.learned_bits / 8:.0f} B",
            str(self.stored_bytes),
            "",
        ]
        total += [""] * (show_act + show_fused)
        est = " (estimated)" if self.float_estimated else ""
        out = [
            *render_rows([head, *lines, total]),
            f"file {self.file_bytes} bytes; float ONNX {self.float_onnx_bytes} bytes{est}; "
            f"ratio {self.ratio:.4f}"
            + (f"; profile {self.profile}, opset {self.opset}" if self.profile else ""),
        ]
        return "\n".join(out)
