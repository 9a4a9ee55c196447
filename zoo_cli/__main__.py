"""``python -m zoo_cli ...``: the ``zoo`` command (e.g. under ``torchrun`` for DDP training)."""

from zoo_cli.main import main

raise SystemExit(main())
