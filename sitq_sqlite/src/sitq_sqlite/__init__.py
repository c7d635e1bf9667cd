"""SQLite backend for sitq.

``SQLiteBackend`` is imported on first access, so loading the plugin module
(``sitq_sqlite.plugin``) for discovery stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .backend import SQLiteBackend

__all__ = ["SQLiteBackend"]


def __getattr__(name: str) -> Any:
    if name == "SQLiteBackend":
        from .backend import SQLiteBackend

        return SQLiteBackend
    raise AttributeError(f"module 'sitq_sqlite' has no attribute {name!r}")
