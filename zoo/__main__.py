"""``python -m zoo ...``: an alias of ``python -m zoo_cli`` (the ``zoo`` command) for torchrun lines and
scripts written before the command moved out of zoo/. A script entry point, never imported, so zoo/'s
library code still depends on nothing after it (tests/test_import_flow.py lists this one exception)."""

from zoo_cli.main import main

raise SystemExit(main())
