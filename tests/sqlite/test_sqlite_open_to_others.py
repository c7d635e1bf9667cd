"""A cloudpickle worker on a SQLite file that other users can write warns at start: they can run code as it."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from sitq import MsgpackSerializer, Worker
from sitq_sqlite import SQLiteBackend

from sitq_test_helpers import warnings_at_start

pytestmark = pytest.mark.skipif(not hasattr(os, "geteuid"), reason="POSIX file modes")


def _database(folder: Path, mode: int = 0o600) -> Path:
    folder.mkdir(exist_ok=True)
    path = folder / "tasks.db"
    sqlite3.connect(path).close()
    path.chmod(mode)
    return path


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("mode", "who"), [(0o660, "its group"), (0o606, "everyone"), (0o666, "its group and everyone")]
)
async def test_a_file_others_can_write_is_named_with_the_risk(
    mode: int, who: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = _database(tmp_path / "db", mode)
    (warning,) = await warnings_at_start(Worker(f"sqlite:///{path}"), caplog)
    assert str(path) in warning and f"writable by {who}" in warning and f"{mode:04o}" in warning
    assert "cloudpickle" in warning and "anyone who can write it can run code as this worker" in warning
    assert "msgpack" in warning and "--allow-task" in warning and "permissions" in warning


@pytest.mark.asyncio
async def test_a_folder_others_can_write_without_the_sticky_bit_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Whoever can write the folder can put another file in its place."""
    folder = tmp_path / "shared"
    path = _database(folder)
    folder.chmod(0o777)
    (warning,) = await warnings_at_start(Worker(SQLiteBackend(path)), caplog)
    assert str(folder) in warning and "sticky" in warning
    folder.chmod(0o1777)  # as /tmp: others cannot remove or rename this user's file
    assert await warnings_at_start(Worker(SQLiteBackend(path)), caplog) == []


@pytest.mark.asyncio
async def test_a_symlink_in_a_folder_others_can_write_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The check followed the link first (realpath): a private file reached through a link in a 0777 folder was
    not named, though whoever writes that folder can point the link at a database of their own."""
    path = _database(tmp_path / "safe")
    (tmp_path / "safe").chmod(0o700)
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    link = shared / "link.db"
    link.symlink_to(path)
    (warning,) = await warnings_at_start(Worker(SQLiteBackend(link)), caplog)
    assert f"the symlink {link}" in warning and "can be pointed at another file" in warning and "0777" in warning
    shared.chmod(0o1777)  # sticky: others cannot replace this user's link
    assert await warnings_at_start(Worker(SQLiteBackend(link)), caplog) == []
    chained = tmp_path / "chained.db"  # a private link to the link: the chain is followed
    chained.symlink_to(link)
    shared.chmod(0o777)
    (warning,) = await warnings_at_start(Worker(SQLiteBackend(chained)), caplog)
    assert f"the symlink {link}" in warning


@pytest.mark.asyncio
async def test_a_file_of_another_user_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    if os.geteuid() != 0:
        pytest.skip("giving a file away needs root")
    path = _database(tmp_path / "db")
    os.chown(path, 65534, -1)
    (warning,) = await warnings_at_start(Worker(f"sqlite:///{path}", serializer="cloudpickle"), caplog)
    assert "belongs to another user (uid 65534" in warning


@pytest.mark.asyncio
async def test_a_private_file_a_msgpack_worker_and_memory_do_not_warn(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    private = _database(tmp_path / "private")
    assert await warnings_at_start(Worker(f"sqlite:///{private}"), caplog) == []
    shared = _database(tmp_path / "shared", 0o666)
    # a msgpack-only worker unpickles nothing: what others write can only name functions (its allow-list limits them)
    assert await warnings_at_start(Worker(f"sqlite:///{shared}", serializer=MsgpackSerializer()), caplog) == []
    assert await warnings_at_start(Worker(SQLiteBackend(":memory:")), caplog) == []
