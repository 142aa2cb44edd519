"""Per-data-set defaults: the settings the README's benchmarks measure. Every value can be overridden."""

from __future__ import annotations

from .config import CompressConfig

__all__ = ["PRESETS", "preset"]

PRESETS: dict[str, CompressConfig] = {
    # measured: benchmarks/results/compress_digits.jsonl
    "digits": CompressConfig(steps=1000, finetune_steps=300, gamma=0.5, init_bits=6.0, distill=1.0, float_epochs=10,
                             restore_every=50, checkpoint_every=500),
    # the character-level language model (issue 5); `text:PATH` uses the same settings. λ = 0.1: at λ = 1 the
    # per-token loss on 1,000 preservation names is memorised (loss 2.43 → 1.37) at the test split's expense
    # (+0.16 nats; benchmarks/results/lm_names.sgsc-lam1.json)
    "names": CompressConfig(steps=2000, gamma=0.05, lam=0.1, float_epochs=6, batch_size=64, lr=5e-4, float_lr=2e-3,
                            init_bits=6.0, restore_every=100, prune_every=200, checkpoint_every=500, finetune_steps=300),
    # measured: benchmarks/results/compress_mnist.jsonl
    "mnist": CompressConfig(steps=3000, finetune_steps=1000, gamma=0.3, init_bits=6.0, distill=1.0, float_epochs=5,
                            batch_size=64, preservation_batch_size=64, restore_every=100, checkpoint_every=500),
}


def preset(dataset: str) -> CompressConfig:
    """The defaults for a data set; a generic CompressConfig for anything else (a user's npz)."""
    return PRESETS.get("names" if dataset == "text" else dataset, CompressConfig())
