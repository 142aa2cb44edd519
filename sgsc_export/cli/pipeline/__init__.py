"""``sgsc pipeline``: compress → export → validate → report as one command, configured from the command line,
the environment (``SGSC_*``) or ``sgsc.toml``. Part of the command line layer: ``run`` imports the converters
and runtime checks inside its stages; ``config`` is torch-free.
"""

from sgsc_export.cli.pipeline.config import PipelineConfig, resolve_config

__all__ = ["PipelineConfig", "resolve_config"]
