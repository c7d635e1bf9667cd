"""api.md, SyncTaskQueue: which errors reach the caller as themselves and which come wrapped.

The caller's bad input (a call that cannot be serialised, a bad argument) is a
``SerializationError`` / ``ValidationError`` from ``enqueue``; a stored result that
cannot be deserialised is a failure reading the store, a ``SyncTaskQueueError``
from ``get_result`` whose ``cause`` is the ``SerializationError``.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from sitq import SerializationError, SQLiteBackend, SyncTaskQueue, SyncTaskQueueError, ValidationError


def test_enqueue_raises_the_callers_own_errors_unwrapped(tmp_path: Path) -> None:
    with SyncTaskQueue(SQLiteBackend(tmp_path / "tasks.db"), serializer="msgpack") as queue:
        with pytest.raises(SerializationError) as info:
            queue.enqueue(len, threading.Lock())  # msgpack: not a msgpack type
        assert not isinstance(info.value, SyncTaskQueueError)
        with pytest.raises(ValidationError) as bad:
            queue.enqueue("not callable")  # type: ignore[arg-type]
        assert not isinstance(bad.value, SyncTaskQueueError)
        assert queue.counts()["queued"] == 0


def test_get_result_wraps_an_unreadable_stored_value_with_the_serialization_error_as_cause(tmp_path: Path) -> None:
    path = tmp_path / "tasks.db"
    with SyncTaskQueue(SQLiteBackend(path)) as queue:
        task_id = queue.enqueue(len, "abc")
    with sqlite3.connect(path) as conn:
        conn.execute(
            "INSERT INTO results (task_id, id, status, value, attempts, serializer) VALUES (?, ?, 'success', ?, 1, ?)",
            (task_id, task_id, b"not a pickle", "cloudpickle"),
        )
    conn.close()
    with SyncTaskQueue(SQLiteBackend(path)) as queue:
        with pytest.raises(SyncTaskQueueError) as info:
            queue.get_result(task_id, timeout=0)
        assert isinstance(info.value.cause, SerializationError)
        assert info.value.__cause__ is info.value.cause
        assert info.value.operation == "get_result" and info.value.task_id == task_id
