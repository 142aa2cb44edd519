"""``python -m sgsc_export.cli``: the ``sgsc`` command."""

from sgsc_export.cli import main

main()
