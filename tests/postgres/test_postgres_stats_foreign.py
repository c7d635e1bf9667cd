"""``sitq stats`` on a schema holding tables of sitq's names that sitq did not make says so, as an enqueue does.

``exists()`` (which ``sitq stats`` asks before connecting) looked only for a
``tasks`` table, so a schema holding an application's own ``meta`` answered
"no sitq data in PostgresBackend(...)", while an enqueue on it said "already
holds table(s) meta that sitq did not create ... nothing in this one was
changed". The guide promises that refusal at connect, ``sitq stats`` included.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
from sitq_test_postgres import dsn_with

from sitq import ConnectionError
from sitq_core.backend import reading_only
from sitq_postgres import PostgresBackend

REFUSAL = "already holds table(s) {tables} that sitq did not create; give sitq a schema of its own"
UNCHANGED = "nothing in this one was changed"

# an application's own tables, of the names sitq uses
FOREIGN = {
    "meta": "CREATE TABLE {s}.meta (key text, value text); INSERT INTO {s}.meta VALUES ('schema_version', '1')",
    "tasks": "CREATE TABLE {s}.tasks (id serial PRIMARY KEY, title text)",
}


async def _snapshot(conn: Any, schema: str) -> list[Any]:
    """Every table and column of the schema, and every row of its tables: what must stay as it was."""
    columns = await conn.fetch(
        "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = $1 ORDER BY 1, 2",
        schema,
    )
    tables = sorted({row[0] for row in columns})
    rows = [sorted(map(tuple, await conn.fetch(f'SELECT * FROM "{schema}".{table}'))) for table in tables]
    return [list(map(tuple, columns)), rows]


async def _make(dsn: str, schema: str, table: str) -> list[Any]:
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(f'CREATE SCHEMA "{schema}"; ' + FOREIGN[table].format(s=f'"{schema}"'))
        return await _snapshot(admin, schema)
    finally:
        await admin.close()


async def _now(dsn: str, schema: str) -> list[Any]:
    admin = await asyncpg.connect(dsn)
    try:
        return await _snapshot(admin, schema)
    finally:
        await admin.close()


@pytest.mark.parametrize("table", sorted(FOREIGN))
def test_cli_stats_refuses_a_schema_holding_an_apps_table_as_an_enqueue_does(
    pg_dsn: str, pg_schema: str, table: str
) -> None:
    import asyncio

    before = asyncio.run(_make(pg_dsn, pg_schema, table))
    command = [sys.executable, "-m", "sitq", "stats", "-b", f"{pg_dsn}?schema={pg_schema}"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert REFUSAL.format(tables=table) in done.stderr and UNCHANGED in done.stderr, done.stderr
    assert "no sitq data" not in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert done.stdout == ""
    assert asyncio.run(_now(pg_dsn, pg_schema)) == before


@pytest.mark.asyncio
async def test_exists_and_a_read_only_connect_refuse_an_apps_meta_in_the_words_of_an_enqueue(
    pg_dsn: str, pg_schema: str
) -> None:
    before = await _make(pg_dsn, pg_schema, "meta")
    backend = PostgresBackend(pg_dsn, schema=pg_schema)
    try:
        with pytest.raises(ConnectionError) as by_exists:
            await backend.exists()
        with reading_only(), pytest.raises(ConnectionError) as by_connect:
            await backend.counts()
        with pytest.raises(ConnectionError) as by_enqueue:
            await backend.connect()  # a writing connect: what an enqueue meets
    finally:
        await backend.close()
    for info in (by_exists, by_connect):
        assert str(info.value) == str(by_enqueue.value)
    assert REFUSAL.format(tables="meta") in str(by_exists.value)
    assert await _now(pg_dsn, pg_schema) == before


@pytest.mark.asyncio
async def test_exists_still_answers_for_an_empty_schema_and_for_sitqs_own(pg_dsn: str, pg_schema: str) -> None:
    backend = PostgresBackend(pg_dsn, schema=pg_schema)
    try:
        assert await backend.exists() is False
        await backend.connect()  # creates sitq's tables
        assert await backend.exists() is True
    finally:
        await backend.close()


@pytest.mark.asyncio
async def test_exists_says_false_when_this_role_cannot_read_the_apps_meta(pg_dsn: str, pg_schema: str) -> None:
    """A role that may write the app's meta but not read it cannot tell whose it is: no sitq data, as before."""
    before = await _make(pg_dsn, pg_schema, "meta")
    role = f"sitq_blind_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(pg_dsn)
    try:
        await admin.execute(
            f'CREATE ROLE {role} LOGIN; GRANT USAGE ON SCHEMA "{pg_schema}" TO {role}; '
            f'GRANT INSERT ON "{pg_schema}".meta TO {role}'
        )
        backend = PostgresBackend(dsn_with(pg_dsn, role=role), schema=pg_schema)
        try:
            assert await backend.exists() is False
        finally:
            await backend.close()
        assert await _now(pg_dsn, pg_schema) == before
    finally:
        await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", role)
        await admin.execute(f"DROP OWNED BY {role}; DROP ROLE IF EXISTS {role}")
        await admin.close()
