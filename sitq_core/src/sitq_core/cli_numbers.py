"""The numbers ``sitq``'s flags take: one rule for whole numbers, one for seconds.

Both read a number as Python does, ``int()`` and ``float()`` (surrounding
blanks ignored, ``_`` between digits, and for seconds a fraction or an
exponent: ``1_000``, ``0.5``, ``1e3``), so that every flag takes the same
forms: ``--older-than`` refused ``1e3`` and ``1_0``, which ``--lease-timeout``
and ``--limit`` took. Each flag checks its own range afterwards.
"""

from __future__ import annotations

import argparse

__all__ = ["seconds", "whole_number"]


def whole_number(text: str) -> int:
    """An argparse ``type``: ``text`` as ``int()`` reads it (``--concurrency``, ``--limit``, ...)."""
    try:
        return int(text)
    except ValueError:
        pass
    if text.strip().lstrip("+-").replace("_", "").isdigit():  # past int()'s limit on digits (4300)
        raise argparse.ArgumentTypeError(f"expected a whole number of at most 4300 digits, got {len(text)} characters")
    raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}")


def seconds(text: str) -> float:
    """An argparse ``type``: ``text`` as ``float()`` reads it (``--lease-timeout``, ``--poll-interval``, ...)."""
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
