"""sitq-postgres's plugin module: registers the backend by import string (nothing heavy imported)."""

from __future__ import annotations

from sitq_core.hookspecs import BackendRegistrar, hookimpl


@hookimpl
def sitq_register_backends(register: BackendRegistrar) -> None:
    register(
        "postgres",
        "sitq_postgres.backend:PostgresBackend",
        url_schemes=("postgresql", "postgres+asyncpg", "postgresql+asyncpg"),
        description="PostgreSQL (asyncpg): many machines, SKIP LOCKED claims, LISTEN/NOTIFY wake-ups",
    )
