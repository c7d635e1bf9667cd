"""Stored text made safe to print on an operator's terminal (the CLI's listings, the worker's log lines).

A task's error message comes from the task, or from whoever can write to the
store: printed raw, its escape sequences could recolour or retitle the
terminal, overwrite a line, or (Unicode bidi controls) show text in another
order than it is stored in.
"""

from __future__ import annotations

import re

__all__ = ["escaped_controls"]

# C0 but tab and newline, DEL, C1 (\x9b: CSI), and the Unicode bidi embeddings, overrides and isolates, which
# reorder how a terminal shows the text around them (an error made to read backwards, "txt.exe" as "exe.txt")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def escaped_controls(text: str) -> str:
    """``text`` with control characters but newline and tab as repr writes them (``\\x1b``, ``\\r``, ``\\u202e``)."""
    return _CONTROL.sub(lambda found: repr(found.group())[1:-1], text)
