"""sitq-sqlite's plugin module: registers the backend by import string (nothing heavy imported)."""

from __future__ import annotations

from sitq_core.hookspecs import BackendRegistrar, hookimpl


@hookimpl
def sitq_register_backends(register: BackendRegistrar) -> None:
    register(
        "sqlite",
        "sitq_sqlite.backend:SQLiteBackend",
        url_schemes=("sqlite+aiosqlite",),
        description="one SQLite file (WAL); embedded, no server",
    )
