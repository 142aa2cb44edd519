"""The method: q(w, b, e) and its straight-through rounding (``core``), the quantised twins and ``prepare_``
(``nn``), the objective task loss + γ·Q + λ·preservation loss (``objective``), and coupled channels with their
physical removal (``graph``, ``pruning``, ``heads``).

This wing knows no built-in model and no data set: it is what a user's own model goes through. It imports only
torch, numpy and ``sgsc_export.config`` / ``errors`` / ``tasks`` (checked by import-linter,
``pyproject.toml``).
"""
