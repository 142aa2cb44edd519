"""The artifact: the contract between compression and the converters.

``format`` is the file list, the manifest's schema and the hashes; it imports only numpy, json and safetensors, so
a reader (``runtime_checks``, another tool) does not load torch. ``compressed`` is :class:`CompressedModel` (load,
save, the deployable module), ``rebuild`` rebuilds that module, from an allowed factory only (docs/ARTIFACT.md).
"""
