"""``python -m driftgate``: the same as the ``driftgate`` command."""

from __future__ import annotations

import sys

from driftgate.cli import main

sys.exit(main())
