"""The artifact: the contract between compression and the converters.

``format`` is the file list, the manifest's schema and the hashes (the preservation set's included); it
imports only numpy and the standard library, so a reader (``runtime_checks``, another tool) does not load
torch. ``compressed`` is :class:`CompressedModel` (load, save, the deployable module), ``rebuild`` rebuilds
that module, from an allowed factory only (docs/ARTIFACT.md). None of them imports the training code
(``method``, ``preservation``, ``train``): exporting an artifact loads none of it.
"""
