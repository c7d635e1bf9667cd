"""Which results appeared since the last look, so a change wakes only the waiters it concerns.

When another process commits, the change watcher used to wake every
``get_result`` waiter and each ran its own query: with thousands of waiters
(``asyncio.gather`` over a batch's ids) that was thousands of queries per
commit, and the waiting process spent a whole core on them. Instead the
watcher thread reads the rows added to ``results`` since its last look,
ordered by rowid (a range read at the end of the table's b-tree, one query
per change however many wait), and wakes only the waiters whose ids it saw.

SQLite gives a new row ``max(rowid) + 1``, so rows appear in rowid order.
Deleting the newest rows (a purge) lets rowids be handed out again; a
maximum below the last one seen means that happened, and then every
waiter is woken once. The waiters' own periodic re-check covers what is left.
"""

from __future__ import annotations

import sqlite3

__all__ = ["NewResults"]


class NewResults:
    """Task ids of the ``results`` rows added since the previous :meth:`scan` (one watcher thread's view)."""

    def __init__(self) -> None:
        self._seen: int | None = None  # the highest rowid seen; None: nobody waited at the last look

    def forget(self) -> None:
        """Nobody waits for a result: the next scan starts from scratch (and wakes everybody)."""
        self._seen = None

    def scan(self, conn: sqlite3.Connection) -> list[str] | None:
        """The task ids with a result added since the last scan; ``None`` means "could be any"."""
        top = conn.execute("SELECT max(rowid) FROM results").fetchone()[0] or 0
        seen, self._seen = self._seen, top
        if seen is None or top < seen:
            return None
        if top == seen:
            return []
        rows = conn.execute("SELECT task_id FROM results WHERE rowid > ? AND rowid <= ?", (seen, top))
        return [task_id for (task_id,) in rows]
