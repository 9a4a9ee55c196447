"""The ``zoo`` command: assembles the subcommands that each package declares in its ``commands.py``.

It is the last step of the flow (zoo -> quantize -> export_mobile -> measure -> zoo_cli), so it is
the one place that may import every package; see :mod:`zoo_cli.main` and docs/architecture.md.
"""
