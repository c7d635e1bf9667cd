"""PostgreSQL backend for sitq.

``PostgresBackend`` is imported on first access, so loading the plugin module
(``sitq_postgres.plugin``) for discovery stays cheap (asyncpg is not imported).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .backend import PostgresBackend

__all__ = ["PostgresBackend"]


def __getattr__(name: str) -> Any:
    if name == "PostgresBackend":
        from .backend import PostgresBackend

        return PostgresBackend
    raise AttributeError(f"module 'sitq_postgres' has no attribute {name!r}")
