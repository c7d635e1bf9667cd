"""The warning that others can write the store covers the -wal and -shm files beside the database.

In WAL mode a write goes to the -wal file first, and readers trust the -shm
index: whoever can write either can change what the worker reads. With the
file ``chmod 644`` and both of them ``chmod 666`` the worker said nothing.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from pathlib import Path

import pytest

from sitq import TaskQueue, Worker
from sitq_sqlite import SQLiteBackend
from sitq_sqlite.access import others_can_write

from sitq_test_helpers import warnings_at_start

pytestmark = pytest.mark.skipif(not hasattr(os, "geteuid"), reason="POSIX file modes")


@asynccontextmanager
async def _wal_database(path: Path) -> AsyncIterator[sqlite3.Connection]:
    """A sitq database at ``path`` (mode 0644) whose -wal and -shm files stay while the block runs.

    The connection yielded holds them open and keeps the -wal holding frames
    (no checkpoint): SQLite gives an empty -wal the database file's mode when
    it opens it, a -wal with frames in it keeps its own.
    """
    os.makedirs(path.parent, exist_ok=True)
    async with TaskQueue(f"sqlite:///{path}") as queue:
        await queue.counts()  # sitq's tables, so the worker takes the file as its own
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("PRAGMA wal_autocheckpoint=0")
        conn.execute("CREATE TABLE notes (x)")
        os.chmod(path, 0o644)
        yield conn


def _write(conn: sqlite3.Connection) -> None:
    """A write as any writer of the file makes: it lands in the -wal."""
    conn.execute("INSERT INTO notes VALUES (1)")


@pytest.mark.asyncio
async def test_wal_and_shm_files_others_can_write_warn(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "db" / "x.db"
    async with _wal_database(path) as conn:
        assert await warnings_at_start(Worker(f"sqlite:///{path}"), caplog) == []
        _write(conn)
        os.chmod(f"{path}-wal", 0o666)
        os.chmod(f"{path}-shm", 0o666)
        (warning,) = await warnings_at_start(Worker(f"sqlite:///{path}"), caplog)
        assert f"its -wal file {path}-wal is writable by its group and everyone (mode 0666)" in warning, warning
        assert f"its -shm file {path}-shm is writable by its group and everyone (mode 0666)" in warning, warning
        assert "the file is writable" not in warning, "the database file itself is 0644"
        os.chmod(f"{path}-wal", 0o644)
        (warning,) = await warnings_at_start(Worker(f"sqlite:///{path}"), caplog)
        assert "-shm file" in warning and "-wal file" not in warning, warning


@pytest.mark.asyncio
async def test_the_wal_file_beside_the_real_file_is_checked_through_a_symlink(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """SQLite keeps the -wal beside the file a symlink points to, not beside the link."""
    real = tmp_path / "data" / "x.db"
    async with _wal_database(real) as conn:
        _write(conn)
        os.chmod(f"{real}-wal", 0o606)
        link = tmp_path / "x.db"
        link.symlink_to(real)
        (warning,) = await warnings_at_start(Worker(SQLiteBackend(link)), caplog)
        assert f"its -wal file {real}-wal is writable by everyone (mode 0606)" in warning, warning


@pytest.mark.asyncio
async def test_a_wal_file_of_another_user_is_named(tmp_path: Path) -> None:
    """Asked of the files as they are: a worker running as root has SQLite hand the -wal back to the database
    file's owner as it opens it, so only a worker of another user would go on reading it."""
    if os.geteuid() != 0:
        pytest.skip("giving a file away needs root")
    path = tmp_path / "db" / "x.db"
    async with _wal_database(path) as conn:
        _write(conn)
        os.chown(f"{path}-wal", 65534, -1)
        (cause,) = others_can_write(str(path))
        assert cause.startswith(f"its -wal file {path}-wal belongs to another user (uid 65534"), cause
