"""Starting points: the per-data-set settings of earlier releases, which the README's benchmark tables of
issue 7 measured. Nobody needs them: the defaults (``CompressConfig()``, one rule for every data set and
model, with the ``max_drop`` controller steering γ) are what ``sgsc compress`` and ``sgsc pipeline`` use
unless ``--preset NAME`` asks for one of these. Every value can still be overridden on top.

γ (and for names λ) were chosen on a validation split held out of the training split, inside issue 7's size
budget (``python -m benchmarks.run --suite select``, benchmarks/results/bench_select.md); ``text:PATH`` uses
the names settings.
"""

from __future__ import annotations

from sgsc_export.config import CompressConfig
from sgsc_export.errors import ConfigError

__all__ = ["PRESETS", "preset"]

PRESETS: dict[str, CompressConfig] = {
    "digits": CompressConfig(steps=1000, finetune_steps=300, gamma=0.5, lam=1.0, init_bits=6.0, distill=1.0,
                             lr=1e-3, lr_exponent=None,
                             float_epochs=10, restore_every=50, prune_every=200, checkpoint_every=500,
                             preservation_batch_size=128),
    # the character-level language model. λ = 1 memorises the 1,000 preservation names at the expense of
    # held-out names (validation loss 2.17 against 2.02 at λ = 0.1)
    "names": CompressConfig(steps=2000, gamma=0.02, lam=0.1, float_epochs=6, batch_size=64, lr=5e-4,
                            float_lr=2e-3, init_bits=6.0, restore_every=100, prune_every=200,
                            checkpoint_every=500, finetune_steps=300, distill=0.0, lr_exponent=None,
                            preservation_batch_size=128),
    # γ = 0.1 has the best validation accuracy, but its file is over 1/6 of PTQ INT8's (the size budget)
    "mnist": CompressConfig(steps=3000, finetune_steps=1000, gamma=0.2, lam=1.0, init_bits=6.0, distill=1.0,
                            lr=1e-3, lr_exponent=None,
                            float_epochs=5, batch_size=64, preservation_batch_size=64, restore_every=100,
                            prune_every=200, checkpoint_every=500),
}


def preset(name: str) -> CompressConfig:
    """The starting point ``name`` (``text`` is ``names``); a ``ConfigError`` naming the choices for any
    other name."""
    key = "names" if name == "text" else name
    if key not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)} (or none: the "
                          "defaults hold for every data set)")
    return PRESETS[key]
