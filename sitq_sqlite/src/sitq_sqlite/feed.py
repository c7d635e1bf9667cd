"""A pipeline for large ``enqueue_many`` batches.

The caller's thread turns tasks into INSERT parameters chunk by chunk while the
connection thread, already inside ``BEGIN IMMEDIATE``, inserts the chunks
handed over so far. SQLite releases the GIL while it steps a statement, so the
Python conversion of one chunk overlaps the insert of the previous one. All
chunks commit together, or none do (the caller aborts on a bad task).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from queue import SimpleQueue
from typing import Any

__all__ = ["Aborted", "InsertFeed"]

_END = object()
_ABORT = object()


class Aborted(Exception):
    """The producer gave up on the batch (a task failed validation): roll back."""


class InsertFeed:
    """Chunks of INSERT parameters handed from a producer thread to the connection thread."""

    def __init__(self, insert: Callable[[sqlite3.Connection, Any], None]) -> None:
        self._insert = insert
        self._queue: SimpleQueue[Any] = SimpleQueue()
        self._inserted: list[Any] = []  # replayed if the transaction is retried
        self._last: object | None = None  # _END or _ABORT once taken off the queue

    def put(self, chunk: Any) -> None:
        """Hand over one chunk (whatever ``insert`` takes)."""
        self._queue.put(chunk)
        time.sleep(0)  # let the connection thread take the GIL now, not at the next forced switch

    def finish(self) -> None:
        """No more chunks: the connection thread commits."""
        self._queue.put(_END)

    def abort(self) -> None:
        """Roll the batch back."""
        self._queue.put(_ABORT)

    def last_chunk(self) -> Any:
        """The chunk taken last (None before the first)."""
        return self._inserted[-1] if self._inserted else None

    def insert_all(self, conn: sqlite3.Connection) -> list[Any]:
        """Run on the connection thread inside the write transaction; returns the chunks inserted."""
        for chunk in self._inserted:  # a busy retry (say at COMMIT) starts the transaction again
            self._insert(conn, chunk)
        while True:
            item = self._last if self._last is not None else self._queue.get()
            if item is _END or item is _ABORT:
                self._last = item
            if item is _END:
                return self._inserted
            if item is _ABORT:
                raise Aborted
            self._inserted.append(item)
            self._insert(conn, item)
