"""Training: the loop (``loop``: float reference, compression steps, restore, pruning during training, checkpoints)
and ``compress()`` (``compress``: float reference → preservation selector → loop → artifact)."""
