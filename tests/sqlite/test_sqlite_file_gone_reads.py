"""Reads after the database file was deleted or replaced answer from the file connected to, and create nothing.

Before, a read on a thread that had no inline connection yet (a ``SyncTaskQueue``'s
loop thread after a lone enqueue, stored on the calling thread) opened one by path:
it created a new 0-byte file where the deleted one was and failed with "no such
table: tasks", or read the replacement file instead of the one connected to.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from pathlib import Path

from sitq import SitqError, SyncTaskQueue
from sitq_sqlite import SQLiteBackend

import sitq_test_tasks as tasks


def remove_database(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(f"{path}{suffix}")


def test_a_read_after_the_file_was_deleted_answers_from_the_old_file_and_creates_none(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    with SyncTaskQueue(f"sqlite:///{path}") as queue:
        task_id = queue.enqueue(tasks.add, 1)  # alone: stored on this thread's own connection
        remove_database(path)
        task = queue.get_task(task_id)
        assert task is not None and task.status == "queued"
        assert queue.get_result_record(task_id, timeout=0) is None
        assert not os.path.exists(path), "a read must never create a database file at the path"
    assert not os.path.exists(path)


def test_an_enqueue_on_a_new_thread_after_the_file_was_deleted_is_refused_and_creates_no_file(tmp_path: Path) -> None:
    """Also within the 0.1 s between two of the write path's file checks: opening a connection finds it gone."""
    path = tmp_path / "q.db"
    with SyncTaskQueue(SQLiteBackend(path)) as queue:
        queue.enqueue(tasks.add, 1)
        remove_database(path)
        errors: list[BaseException] = []

        def enqueue() -> None:
            try:
                queue.enqueue(tasks.add, 2)
            except SitqError as exc:
                errors.append(exc)

        producer = threading.Thread(target=enqueue)
        producer.start()
        producer.join()
        assert len(errors) == 1 and "deleted or replaced" in str(errors[0])
        assert not os.path.exists(path), "an enqueue must never create a database file at the path"


def test_a_read_after_the_file_was_replaced_answers_from_the_file_connected_to(tmp_path: Path) -> None:
    path, other = tmp_path / "q.db", tmp_path / "other.db"
    with SyncTaskQueue(SQLiteBackend(other)) as elsewhere:
        foreign_id = elsewhere.enqueue(tasks.add, 2)
    with SyncTaskQueue(f"sqlite:///{path}") as queue:
        task_id = queue.enqueue(tasks.add, 1)
        remove_database(path)
        shutil.copy(other, tmp_path / "copy.db")
        os.replace(tmp_path / "copy.db", path)  # a backup moved over it
        task = queue.get_task(task_id)
        assert task is not None and task.id == task_id, "read from the file this queue connected to"
        assert queue.get_task(foreign_id) is None, "not from the replacement"
