"""The PostgreSQL server the tests use, and what to do when there is none.

The server is ``SITQ_TEST_POSTGRES_DSN`` (default: the local ``test`` database
as user ``postgres``). Without a reachable server the PostgreSQL tests skip,
saying why; under ``CI=true`` a missing server fails them instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from typing import Any

import pytest

DSN = os.environ.get("SITQ_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
_reachable: str | None = None  # "" when reachable, else the reason


def _run(coro_factory: object) -> object:
    """Run a coroutine on a private loop in a thread (works inside and outside a running loop)."""
    box: dict[str, object] = {}

    def main() -> None:
        try:
            box["value"] = asyncio.run(coro_factory())  # type: ignore[operator]
        except BaseException as exc:  # handed to the caller
            box["error"] = exc

    thread = threading.Thread(target=main)
    thread.start()
    thread.join(60)
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box.get("value")


def _probe() -> str:
    try:
        import asyncpg
    except ImportError:
        return "asyncpg is not installed (in the checkout's folder: pip install ./sitq_postgres)"

    async def check() -> None:
        conn = await asyncpg.connect(DSN, timeout=5)
        await conn.close()

    try:
        _run(check)
    except Exception as exc:  # any failure means "no server"
        return f"PostgreSQL is not reachable at {DSN} ({type(exc).__name__}: {exc})"
    return ""


def require_postgres() -> None:
    """Skip (or, under CI=true, fail) when no PostgreSQL server answers."""
    global _reachable
    if _reachable is None:
        _reachable = _probe()
    if _reachable:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI needs PostgreSQL for these tests: {_reachable}")
        pytest.skip(f"{_reachable}; set SITQ_TEST_POSTGRES_DSN to run the PostgreSQL tests")


def drop_schema(schema: str) -> None:
    import asyncpg

    async def drop() -> None:
        conn = await asyncpg.connect(DSN, timeout=10)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()

    _run(drop)


def dsn_with(dsn: str, *, role: str | None = None, database: str | None = None) -> str:
    """``dsn`` logging in as ``role`` and/or to ``database`` instead (no password: the test server trusts)."""
    from urllib.parse import urlsplit

    parts = urlsplit(dsn)
    user = role or parts.username or "postgres"
    netloc = f"{user}@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=netloc, path=f"/{database}" if database else parts.path).geturl()


@contextlib.asynccontextmanager
async def temporary_role(dsn: str, schema: str, prefix: str, *, grants: str, limit: int | None = None) -> Any:
    """A login role (named ``prefix`` plus a random suffix) with USAGE on ``schema`` and ``grants`` on all its
    tables, made by the owner after sitq created the schema; its sessions are ended and it is dropped afterwards."""
    import uuid

    import asyncpg

    from sitq import TaskQueue
    from sitq_postgres import PostgresBackend

    async with TaskQueue(PostgresBackend(dsn, schema=schema)):
        pass  # the owner's first connect creates the schema
    role = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(
            f"CREATE ROLE {role} LOGIN{'' if limit is None else f' CONNECTION LIMIT {limit}'}; "
            f"GRANT USAGE ON SCHEMA {schema} TO {role}; GRANT {grants} ON ALL TABLES IN SCHEMA {schema} TO {role}"
        )
        yield role
    finally:
        await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", role)
        await admin.execute(f"DROP OWNED BY {role}; DROP ROLE IF EXISTS {role}")
        await admin.close()
