"""Training: ``compress()`` (``compress``: float reference → preservation set → loop → artifact) and its
steps, one a module: the input and checkpoint checks (``checks``), the preservation set
(``preservation_set``), the loop (``loop``: float reference, compression steps, restore, pruning during
training, checkpoints) and ``freeze`` (the deployable state and the integers the artifact stores)."""
