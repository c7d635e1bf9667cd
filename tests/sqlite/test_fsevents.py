"""File-write events for the change watcher (Linux inotify; elsewhere the watcher polls)."""

from __future__ import annotations

import sqlite3
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sitq_sqlite.fsevents import FileChanges, open_changes

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify is Linux-only")


@pytest.fixture
def changes(tmp_path: Path) -> Iterator[FileChanges]:
    watched = open_changes(str(tmp_path / "tasks.db"))
    assert watched is not None, "inotify should be available on Linux"
    yield watched
    watched.close()


def test_a_commit_to_the_database_is_reported(tmp_path: Path, changes: FileChanges) -> None:
    conn = sqlite3.connect(tmp_path / "tasks.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE t (v INTEGER)")
    changes.drain()
    conn.execute("INSERT INTO t VALUES (1)")  # writes tasks.db-wal
    assert changes.wait(5.0) is True
    conn.close()


def test_a_commit_through_a_symlinked_path_is_reported(tmp_path: Path) -> None:
    """SQLite writes the -wal beside the link's target: watching the link's folder saw nothing (slow pickups)."""
    (tmp_path / "real").mkdir()
    (tmp_path / "links").mkdir()
    (tmp_path / "links" / "tasks.db").symlink_to(tmp_path / "real" / "tasks.db")
    watched = open_changes(str(tmp_path / "links" / "tasks.db"))
    assert watched is not None
    try:
        conn = sqlite3.connect(tmp_path / "links" / "tasks.db", isolation_level=None)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("CREATE TABLE t (v INTEGER)")
        watched.drain()
        conn.execute("INSERT INTO t VALUES (1)")
        assert watched.wait(5.0) is True
        conn.close()
    finally:
        watched.close()


def test_writes_to_other_files_in_the_folder_are_ignored(tmp_path: Path, changes: FileChanges) -> None:
    (tmp_path / "app.log").write_text("unrelated\n")
    (tmp_path / "tasks.db.bak").write_text("not the database\n")
    assert changes.wait(0.05) is False


def test_interrupt_ends_a_wait_at_once(changes: FileChanges) -> None:
    result: list[bool] = []
    waiter = threading.Thread(target=lambda: result.append(changes.wait(30.0)))
    waiter.start()
    changes.interrupt()
    waiter.join(5.0)
    assert not waiter.is_alive()
    assert result == [False]


def test_a_missing_folder_means_no_events(tmp_path: Path) -> None:
    assert open_changes(str(tmp_path / "no" / "such" / "dir" / "tasks.db")) is None
