"""The PostgreSQL server the tests use, and what to do when there is none.

The server is ``SITQ_TEST_POSTGRES_DSN`` (default: the local ``test`` database
as user ``postgres``). Without a reachable server the PostgreSQL tests skip,
saying why; under ``CI=true`` a missing server fails them instead.
"""

from __future__ import annotations

import asyncio
import os
import threading

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
