"""A path with ``..`` after a symlinked folder names the file the OS and the ``sqlite3`` module open.

sitq made such a path absolute by collapsing ``..`` as text, while the OS
follows the symlink first: ``link/../q.db`` with ``link -> other/deep`` was
``./q.db`` for sitq but ``other/q.db`` for ``sqlite3.connect`` and ``open``,
so users reading the queue's file saw an empty database.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
from contextlib import closing
from pathlib import Path

import pytest

from sitq_core.models import Task, new_id
from sitq_core.urls import parse_backend_url
from sitq_sqlite import SQLiteBackend

TESTS = Path(__file__).resolve().parents[1]


@pytest.fixture
def linked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``<tmp>/p/link -> <tmp>/other/deep``, with ``<tmp>/p`` the working directory; returns ``<tmp>``."""
    root = Path(os.path.realpath(tmp_path))
    (root / "p").mkdir()
    (root / "other" / "deep").mkdir(parents=True)
    (root / "p" / "link").symlink_to(root / "other" / "deep")
    monkeypatch.chdir(root / "p")
    return root


def test_dotdot_after_a_symlinked_folder_goes_where_the_os_goes(linked: Path) -> None:
    where = str(linked / "other" / "q2.db")
    assert os.path.realpath("link/../q2.db") == where  # what the OS opens
    assert SQLiteBackend("link/../q2.db").path == where
    assert SQLiteBackend(str(linked / "p" / "link" / ".." / "q2.db")).path == where
    assert SQLiteBackend(Path("link/../q2.db")).path == where
    assert SQLiteBackend.from_url(parse_backend_url("sqlite:///link/../q2.db")).path == where
    assert SQLiteBackend.from_url(parse_backend_url(f"sqlite:///{linked}/p/link/../q2.db")).path == where


def test_paths_that_mean_the_same_as_their_plain_absolute_form_keep_it(linked: Path) -> None:
    """Only a ``..`` that follows a symlink changes the path users see: the rest stays as os.path.abspath gives."""
    (linked / "p" / "sub").mkdir()
    for given in ("q.db", "./q.db", "sub/../q.db", "link/x.db", "link/./x.db", "sub/../link/x.db", "~/q.db"):
        assert SQLiteBackend(given).path == os.path.abspath(os.path.expanduser(given)), given
    # a folder that is not there yet (it is made at connect): nothing to follow, so the plain form
    assert SQLiteBackend("new/../q.db").path == str(linked / "p" / "q.db")
    # a symlink before a '..' that stays inside its target means the same either way: the plain form
    (linked / "other" / "deep" / "in").mkdir()
    assert SQLiteBackend("link/in/../x.db").path == str(linked / "p" / "link" / "x.db")
    # the '..' follows a symlink inside a symlink's target: resolved where the OS goes
    (linked / "other" / "deep" / "jump").symlink_to(linked / "other" / "far" / "away", target_is_directory=True)
    (linked / "other" / "far" / "away").mkdir(parents=True)
    assert SQLiteBackend("link/jump/../x.db").path == str(linked / "other" / "far" / "x.db")
    assert os.path.realpath("link/jump/../x.db") == str(linked / "other" / "far" / "x.db")


@pytest.mark.asyncio
async def test_sqlite3_reads_what_sitq_stored_through_the_same_spelling(linked: Path) -> None:
    """API-CONTRACT: users open the file with the sqlite3 module."""
    async with SQLiteBackend("link/../q2.db") as backend:
        await backend.enqueue(Task(id=new_id(), payload=b"data"))
    with closing(sqlite3.connect("link/../q2.db")) as conn:
        assert conn.execute("SELECT count(*) FROM tasks").fetchone()[0] == 1
    assert sorted(os.listdir(linked / "p")) == ["link"], "nothing was made beside the symlink"


@pytest.mark.slow
def test_two_processes_using_the_two_spellings_share_one_store(linked: Path) -> None:
    code = textwrap.dedent(
        """
        import asyncio, sys
        import sitq_test_tasks as tasks
        from sitq import TaskQueue
        async def main():
            async with TaskQueue(sys.argv[1]) as queue:
                await queue.enqueue(tasks.add, 1, 2)
        asyncio.run(main())
        """
    )
    env = dict(os.environ, PYTHONPATH=str(TESTS))
    for url, cwd in (("sqlite:///link/../q2.db", linked / "p"), ("sqlite:///q2.db", linked / "other")):
        done = subprocess.run(
            [sys.executable, "-c", code, url], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr[-2000:]
    with closing(sqlite3.connect(linked / "other" / "q2.db")) as conn:
        assert conn.execute("SELECT count(*) FROM tasks").fetchone()[0] == 2
    assert not (linked / "p" / "q2.db").exists()
