"""``python -m medvit``: the ``medvit`` command (what front ends in ``apps/`` run, without importing the CLI)."""

import sys

from medvit.cli.main import main

sys.exit(main())
