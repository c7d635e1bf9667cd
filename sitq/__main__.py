"""``python -m sitq``: the sitq command line."""

from __future__ import annotations

import sys

from sitq_core.cli import main

if __name__ == "__main__":
    sys.exit(main())
