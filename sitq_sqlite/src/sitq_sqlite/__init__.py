"""SQLite backend for sitq."""

from __future__ import annotations

from .backend import SQLiteBackend

__all__ = ["SQLiteBackend"]
