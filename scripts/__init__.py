"""Command lines of convexgan: each module is a script of scripts/ (``python scripts/NAME.py``),
also ``python -m convexgan.cli.NAME`` and the console script ``convexgan-NAME``."""
