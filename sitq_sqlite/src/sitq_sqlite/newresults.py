"""Which results appeared since the last look, so a change wakes only the waiters it concerns.

When another process commits, the change watcher used to wake every
``get_result`` waiter and each ran its own query: with thousands of waiters
(``asyncio.gather`` over a batch's ids) that was thousands of queries per
commit, and the waiting process spent a whole core on them. Instead the
watcher thread reads the rows added to ``results`` since its last look,
ordered by rowid (a range read at the end of the table's b-tree, one query
per change however many wait), and wakes only the waiters whose ids it saw.

SQLite gives a new row ``max(rowid) + 1``, so rows appear in rowid order.
Deleting the newest rows (a requeue, a purge) lets SQLite hand their rowids
out again, and the next rows could land at or below the last rowid seen. So
the scan remembers the whole last row it saw (rowid, task id, finish time)
and reads from that rowid on: when that row is gone or changed, rows may have
been missed, and every waiter is woken once. The waiters' own periodic
re-check covers what is left.
"""

from __future__ import annotations

import sqlite3

from .undecodable import read_tolerantly

__all__ = ["NewResults"]


_Row = tuple[int, str, int | None]  # rowid, task_id, finished_at


class NewResults:
    """Task ids of the ``results`` rows added since the previous :meth:`scan` (one watcher thread's view)."""

    def __init__(self) -> None:
        self._last: _Row | None = None  # the newest row seen; None: nobody waited at the last look
        self._known = False  # whether _last is meaningful (False: start from scratch)

    def forget(self) -> None:
        """Nobody waits for a result: the next scan starts from scratch (and wakes everybody)."""
        self._known = False

    def scan(self, conn: sqlite3.Connection) -> list[str] | None:
        """The task ids with a result added since the last scan; ``None`` means "could be any".

        A task id that is not UTF-8 text (changed by hand) failed every scan
        that read it, which then woke every waiter: such a scan is read again
        with ``tolerant_text``, and the id left out (no one waits by it).
        """
        try:
            return self._scan(conn)
        except sqlite3.OperationalError as exc:
            text_factory = read_tolerantly(conn, exc)
            if text_factory is None:
                raise
        try:
            task_ids = self._scan(conn)
        finally:
            conn.text_factory = text_factory
        return None if task_ids is None else [task_id for task_id in task_ids if type(task_id) is str]

    def _scan(self, conn: sqlite3.Connection) -> list[str] | None:
        if not self._known:
            self._known, self._last = True, self._newest(conn)
            return None
        last = self._last
        rows: list[_Row] = conn.execute(
            "SELECT rowid, task_id, finished_at FROM results WHERE rowid >= ? ORDER BY rowid",
            (0 if last is None else last[0],),
        ).fetchall()
        if last is not None:
            if not rows or tuple(rows[0]) != last:  # the row seen last is gone: rowids may be reused
                self._last = rows[-1] if rows else self._newest(conn)
                return None
            rows = rows[1:]
        if rows:
            self._last = rows[-1]
        return [row[1] for row in rows]

    @staticmethod
    def _newest(conn: sqlite3.Connection) -> _Row | None:
        row: _Row | None = conn.execute(
            "SELECT rowid, task_id, finished_at FROM results ORDER BY rowid DESC LIMIT 1"
        ).fetchone()
        return row
