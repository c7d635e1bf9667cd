"""``python -m sitq_core``: the sitq command line, for an install of sitq-core alone (as ``python -m sitq``)."""

from __future__ import annotations

import sys

from sitq_core.cli import main

if __name__ == "__main__":
    sys.exit(main())
