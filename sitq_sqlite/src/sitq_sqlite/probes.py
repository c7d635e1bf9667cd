"""Looks at a database file that change nothing in it: does it hold sitq's tables, may it be read as an
immutable snapshot, can this connection write it.

``sitq stats`` and ``exists()`` read files other processes write, and leave
no -wal/-shm files of their own beside them: a process that may only read a
WAL file reads it as an immutable snapshot (``_idle_snapshot``), one that may
write it reads through a connection SQLite lets remove them at close; a writer learns at connect, not at its
first enqueue, that the file refuses writes (``_probe_write``).
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from sitq_core import forks

from .access import may, write_blockers
from .hints import _is_not_a_db
from .inline import is_busy as _is_busy
from .schema import holds_sitq_tables


class _CannotWrite(Exception):
    """The connect's write probe failed: this process can read the file but not write it."""


def _holds_sitq_tables(path: str) -> bool:
    with forks.gate.inside():
        return _holds_sitq_tables_now(path)


def _holds_sitq_tables_now(path: str) -> bool:
    """False for a missing file or one that is not a database; raises what keeps the file from being read."""
    if not os.path.exists(path):
        return False
    # a read of an idle WAL file by a process that cannot write it creates no -wal/-shm (see _idle_snapshot); a
    # writer that starts meanwhile cannot take sitq's tables away, so no check after it is needed here
    if _idle_snapshot(path) is not None:
        mode = "ro&immutable=1"
    elif not write_blockers(path):
        # SQLite leaves a read-only (mode=ro) connection's -wal and -shm files behind when it closes (an
        # empty -wal and a 32 KB -shm beside a damaged file, which sitq stats then left): a connection that
        # may write, and writes nothing, removes them at close like any last connection, and only when it
        # takes the file's exclusive lock, so never from under another process that has the file open
        mode = "rw"
    else:
        mode = "ro"
    conn = sqlite3.connect(f"{Path(path).absolute().as_uri()}?mode={mode}", uri=True)
    try:
        return holds_sitq_tables(conn)
    except sqlite3.DatabaseError as exc:
        if _is_not_a_db(exc):
            return False
        raise
    finally:
        conn.close()


def _idle_snapshot(path: str) -> tuple[int, ...] | None:
    """The file's state when this process may read it as an immutable snapshot, else None.

    A reader of a WAL database opens (creating) its -wal and -shm files; a
    process that cannot write the database cannot remove them at close, so a
    monitoring user's ``sitq stats`` would leave files of its own, which can
    lock the owner out. When the file is in WAL mode, this process cannot write
    it and no -wal file is there, no connection has it open (each keeps the -wal
    file until the last one closes, after a checkpoint into the file): the file
    alone holds every commit, and reading it with ``immutable=1`` creates
    nothing. The state returned (inode, size, times) is compared again after
    each read (``_checked_snapshot``) to catch a writer that started meanwhile.
    """
    try:
        real = os.path.realpath(path)  # SQLite keeps the -wal beside the file a symlink points to
        if may(real, os.W_OK) or os.path.lexists(real + "-wal"):
            return None
        with open(real, "rb") as file:
            header = file.read(20)
        st = os.stat(real)
        if os.path.lexists(real + "-wal"):
            return None
    except OSError:
        return None
    if len(header) < 20 or not header.startswith(b"SQLite format 3\0") or header[18:20] != b"\x02\x02":
        return None  # not a WAL database: a reader of a rollback-journal file creates nothing anyway
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _probe_write(conn: sqlite3.Connection) -> None:
    """Raise ``_CannotWrite`` when this connection cannot write the file; writes nothing.

    ``BEGIN IMMEDIATE`` alone succeeds on a read-only file in WAL mode (its
    write lock lives in the -shm file); rewriting ``user_version`` with its own
    value dirties page 1 in the page cache, which is where SQLite refuses, and
    the rollback drops it before anything reaches the disk. When another
    connection holds the write lock the probe is skipped (connecting never
    waits for the lock); the first write then says why it failed.
    """
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if _is_busy(exc):
            return
        raise _CannotWrite from exc
    try:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        conn.execute(f"PRAGMA user_version = {version}")
    except sqlite3.OperationalError as exc:
        raise _CannotWrite from exc
    finally:
        if conn.in_transaction:
            conn.rollback()
