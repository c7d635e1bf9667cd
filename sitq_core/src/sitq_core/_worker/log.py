"""The worker's logger: every part of the worker logs as ``sitq.worker`` (what users filter on)."""

from __future__ import annotations

import logging

logger = logging.getLogger("sitq.worker")
