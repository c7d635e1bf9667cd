"""Finding the rows a claim takes: due tasks in priority, due, seq order, read from the claim index.

The partial index ``tasks_claim (queue, priority DESC, due, seq) WHERE status
IN ('queued', 'running')`` holds one lane per (queue, priority). A claim
walks the lanes with index seeks (each lane's first row, its head) and
merges the due rows of the best lanes, so its cost does not grow with the
depth of a queue; a backlog of many shallow lanes is read in one pass over
the index instead (``_lanes_or_scan`` races the two). ``next_eta`` reads
the index the same way. The claim's UPDATE and its lease tokens are the
backend's: this module only reads.
"""

from __future__ import annotations

import heapq
import sqlite3
from collections.abc import Callable, Iterator
from typing import Any

from .rows import _is_number
from .schema import ACTIVE
from .undecodable import Undecodable, tolerant_text

_CLAIM_SQL = (
    "SELECT seq, due, status, lease_expiries, max_lease_expiries, cancel_requested FROM tasks INDEXED BY tasks_claim "
    f"WHERE queue = ? AND {ACTIVE} AND priority = ? AND due <= ? ORDER BY due, seq LIMIT ?"
)
_CLAIM_AFTER_SQL = (  # a lane's due rows after (due, seq): the k-way merge reading on (see _claim_candidates)
    "SELECT seq, due, status, lease_expiries, max_lease_expiries, cancel_requested FROM tasks INDEXED BY tasks_claim "
    f"WHERE queue = ? AND {ACTIVE} AND priority = ? AND due <= ? AND (due, seq) > (?, ?) ORDER BY due, seq LIMIT ?"
)
_MERGE_FIRST_READ = 2  # rows read from a lane when the merge first takes its head
_MIN_DUE_SQL = f"SELECT min(due) FROM tasks INDEXED BY tasks_claim WHERE queue = ? AND {ACTIVE} AND priority = ?"
_HEAD_SQL = (  # a lane's first due row, for a lane whose first row has no due (a row changed around sitq)
    f"SELECT due, seq FROM tasks INDEXED BY tasks_claim WHERE queue = ? AND {ACTIVE} AND priority = ? AND due <= ? "
    "ORDER BY due, seq LIMIT 1"
)
_MAX_VARIABLES = 500
# Lanes: the (queue, priority) pairs holding claimable tasks, each found with its first row of the claim index
# (its head) by an index seek per lane, all in one statement (see _lanes_or_scan).
_FIRST_OF = "SELECT seq FROM tasks INDEXED BY tasks_claim WHERE {} ORDER BY queue, priority DESC, due, seq LIMIT 1"
_LANE_ROW = "SELECT t.queue, t.priority, t.due, t.seq FROM {} tasks AS t WHERE t.seq = "
_NEXT_IN_QUEUE = _FIRST_OF.format(f"queue = lane.queue AND {ACTIVE} AND priority < lane.priority")
# Plain ? placeholders only, each value bound as often as it is used: numbered ones (?1) bound from a tuple warn on
# Python 3.12.0-3.12.3 (python/cpython#117995), an error under -W error (see tests/sqlite/test_sqlite_placeholders.py).
_LANES_SQL = (  # every queue, from the first lane or the one after a (queue, priority), to the next one in index order
    "WITH RECURSIVE lane(queue, priority, due, seq) AS ({} UNION ALL "
    f"{_LANE_ROW.format('lane,')}coalesce(({_NEXT_IN_QUEUE}), "
    f"({_FIRST_OF.format(f'{ACTIVE} AND queue > lane.queue')}))"
    ") SELECT queue, priority, due, seq FROM lane LIMIT ?"
)
_FIRST_LANES_SQL = _LANES_SQL.format(f"{_LANE_ROW.format('')}({_FIRST_OF.format(ACTIVE)})")
_LANES_AFTER_SQL = _LANES_SQL.format(  # parameters: queue, priority, queue (again), limit
    f"{_LANE_ROW.format('')}coalesce(({_FIRST_OF.format(f'queue = ? AND {ACTIVE} AND priority < ?')}), "
    f"({_FIRST_OF.format(f'{ACTIVE} AND queue > ?')}))"
)
_LANES_OF_SQL = (  # the named queues (bound as VALUES): the first lane of each, then the next ones within it
    "WITH RECURSIVE named(queue) AS (VALUES {}), lane(queue, priority, due, seq) AS ("
    f"SELECT * FROM ({_LANE_ROW.format('named,')}({_FIRST_OF.format(f'queue = named.queue AND {ACTIVE}')}) "
    f"LIMIT ?) UNION ALL {_LANE_ROW.format('lane,')}({_NEXT_IN_QUEUE})"
    ") SELECT queue, priority, due, seq FROM lane LIMIT ?"
)
_COUNT_SQL = f"SELECT count(*) FROM (SELECT 1 FROM tasks INDEXED BY tasks_claim WHERE {ACTIVE} {{}} LIMIT ?)"
# The lane walk starts with this many lanes, and grows fourfold while counting rows up to _SCAN_ROWS_PER_LANE
# times the lanes walked finds more: a backlog that shallow is read in one pass instead (see _lanes_or_scan).
_FIRST_LANES = 64
_LANES_GROWTH = 4
_SCAN_ROWS_PER_LANE = 128
_ALL_ROWS = 1 << 62  # a count no table reaches
_CLAIM_SCAN_SQL = (
    "SELECT seq, due, status, lease_expiries, max_lease_expiries, cancel_requested, priority "
    "FROM tasks INDEXED BY tasks_claim "
    f"WHERE {ACTIVE} {{}} AND due <= ? ORDER BY priority DESC, due, seq LIMIT ?"
)
_MIN_DUE_SCAN_SQL = (  # the tasks counted (up to a bound) and their least due
    f"SELECT count(*), min(due) FROM (SELECT due FROM tasks INDEXED BY tasks_claim WHERE {ACTIVE} {{}} LIMIT ?)"
)


_Lane = tuple[Any, Any, Any, int]  # (queue, priority, due, seq) of a lane's first row in the claim index


def _walk_lanes(conn: sqlite3.Connection, queues: list[str] | None, lanes: list[_Lane], most: int) -> bool:
    """Walk on to every lane holding claimable tasks, each with its first row; False when there are more than ``most``.

    ``lanes`` holds the lanes walked so far and gets the rest (up to one
    more than ``most``). A lane costs two or three index seeks, all inside one
    statement, whatever the number of tasks in it.
    """
    if queues is None:  # lanes in index order: go on after the last one
        left = most + 1 - len(lanes)
        if not lanes:
            lanes += conn.execute(_FIRST_LANES_SQL, (left,)).fetchall()
        elif left > 0:
            queue, priority = lanes[-1][:2]
            lanes += conn.execute(_LANES_AFTER_SQL, (queue, priority, queue, left)).fetchall()
        return len(lanes) <= most
    lanes.clear()  # named queues: walked again from the first
    per = _MAX_VARIABLES - 2
    for start in range(0, len(queues), per):
        chunk = queues[start : start + per]
        left = most + 1 - len(lanes)
        sql = _LANES_OF_SQL.format(",".join(["(?)"] * len(chunk)))
        lanes += conn.execute(sql, (*chunk, left, left)).fetchall()
        if len(lanes) > most:
            return False
    return True


def _due_head_early(conn: sqlite3.Connection, queues: list[str] | None, now: int) -> bool:
    """Whether one of the first lanes starts with a due row, read lazily: the usual answer costs a lane or two."""
    if queues is None:
        cursor = conn.execute(_FIRST_LANES_SQL, (_FIRST_LANES,))
    else:
        chunk = queues[: _MAX_VARIABLES - 2]
        sql = _LANES_OF_SQL.format(",".join(["(?)"] * len(chunk)))
        cursor = conn.execute(sql, (*chunk, _FIRST_LANES, _FIRST_LANES))
    try:
        return any(_is_number(due) and due <= now for _queue, _priority, due, _seq in cursor)
    finally:
        cursor.close()


def _rows_up_to(conn: sqlite3.Connection, queues: list[str] | None, most: int) -> int:
    """The number of claimable tasks (due or not) in ``queues``, counted up to ``most`` (the index alone is read)."""
    counted = 0
    for where, names in _queue_filters(queues):
        counted += conn.execute(_COUNT_SQL.format(where), (*names, most - counted)).fetchone()[0]
        if counted >= most:
            break
    return counted


def _lanes_or_scan(
    conn: sqlite3.Connection, queues: list[str] | None, fits: Callable[[int], bool] | None = None
) -> list[_Lane] | None:
    """Every lane with its first row, or None when one pass over the claim index costs less.

    A lane costs 2-20 µs whatever it holds (its seeks, and the pages they read
    when the index is larger than the page cache); one pass costs about
    200 ns for every task waiting, due or not. Neither number is known
    beforehand, so the two are raced: lanes are walked up to a bound that
    grows fourfold, and between walks the tasks are counted up to
    ``_SCAN_ROWS_PER_LANE`` times the lanes found so far (``fits``, given
    that many rows, may instead read them and say whether they were all the
    tasks: next_eta's one pass is such a count). A backlog that
    shallow (20,000 queues with a task each) is read in one pass; a deep one
    (1,000 queues of 1,000 tasks) lane by lane, at the cost of its lanes only.
    """
    lanes: list[_Lane] = []
    most = _FIRST_LANES
    while True:
        walked = _walk_lanes(conn, queues, lanes, most)
        if conn.text_factory is tolerant_text and any(type(value) is Undecodable for lane in lanes for value in lane):
            # a lane named by text that is not UTF-8 (changed by hand) cannot be bound again to read it: one pass
            if fits is not None:
                fits(_ALL_ROWS)
            return None
        if walked:
            return lanes
        rows = most * _SCAN_ROWS_PER_LANE
        if fits(rows) if fits is not None else _rows_up_to(conn, queues, rows) < rows:
            return None
        most *= _LANES_GROWTH


def _queue_filters(queues: list[str] | None) -> Iterator[tuple[str, list[str]]]:
    """SQL conditions (and their parameters) covering ``queues`` in chunks of bound variables."""
    if queues is None:
        yield "", []
        return
    for start in range(0, len(queues), _MAX_VARIABLES):
        chunk = queues[start : start + _MAX_VARIABLES]
        yield f"AND queue IN ({','.join('?' * len(chunk))})", chunk


def _work_due(conn: sqlite3.Connection, queues: list[str] | None, now: int) -> bool:
    """Whether any task is claimable now, read in one snapshot without taking the write lock."""
    conn.execute("BEGIN")
    try:
        return _due_head_early(conn, queues, now) or bool(_claim_candidates(conn, queues, now, 1))
    finally:
        if conn.in_transaction:
            conn.execute("COMMIT")


def _claim_candidates(conn: sqlite3.Connection, queues: list[str] | None, now: int, need: int) -> list[tuple[Any, ...]]:
    """Up to ``need`` due rows, priority DESC then due then seq: from the best lanes, or in one pass over many."""
    lanes = _lanes_or_scan(conn, queues)
    if lanes is None:
        rows: list[tuple[Any, ...]] = []
        for where, names in _queue_filters(queues):
            rows += conn.execute(_CLAIM_SCAN_SQL.format(where), (*names, now, need)).fetchall()
        rows.sort(key=lambda row: (row[1], row[0]))
        rows.sort(key=lambda row: _sqlite_order(row[6]), reverse=True)  # stable: due, seq within a priority
        return [row[:6] for row in rows[:need]]
    # A lane's rows are in (due, seq) order, so the first ``need`` rows overall lie in the lanes whose first due
    # rows (heads) are the first ``need`` heads: a k-way merge of those lanes, each read only as far as it is taken.
    heads: list[tuple[Any, Any, int, Any]] = []
    for queue, priority, due, seq in lanes:
        if due is None:  # sorts first in the index (a row changed around sitq): the head is further in
            head = conn.execute(_HEAD_SQL, (queue, priority, now)).fetchone()
            if head is None:
                continue
            due, seq = head
        elif not _is_number(due) or due > now:  # not due; text or a blob sorts after every number
            continue
        heads.append((priority, due, seq, queue))
    heads.sort(key=lambda head: (head[1], head[2]))
    heads.sort(key=lambda head: _sqlite_order(head[0]), reverse=True)  # stable: due, seq within a priority
    del heads[need:]
    # The merge: a heap of (priority's place, due, seq, lane, read_on) entries, the heads first (sorted, so already
    # a heap). An entry is a row to take or, with read_on, the last row taken from a lane whose rows read so far
    # are used up: the lane is read on after it once nothing else comes first. A lane whose head alone is taken
    # costs one short read; further reads double.
    ranks: dict[Any, int] = {}  # each priority's place, highest first: keys that compare whatever its type
    heap = [(ranks.setdefault(head[0], len(ranks)), head[1], head[2], lane, False) for lane, head in enumerate(heads)]
    ahead: dict[int, list[tuple[Any, ...]]] = {}  # per lane: rows read and not taken yet, last first
    asked: dict[int, int] = {}  # per lane: rows its last read asked for and got (0: it has no more)
    chosen: list[tuple[Any, ...]] = []
    while heap and len(chosen) < need:
        rank, due, seq, lane, read_on = heapq.heappop(heap)
        if read_on or lane not in ahead:
            priority, _due, _seq, queue = heads[lane]
            asked[lane] = size = min(need - len(chosen), max(_MERGE_FIRST_READ, 2 * asked.get(lane, 0)))
            if read_on:
                found = conn.execute(_CLAIM_AFTER_SQL, (queue, priority, now, due, seq, size)).fetchall()
            else:
                found = conn.execute(_CLAIM_SQL, (queue, priority, now, size)).fetchall()
            ahead[lane] = found[::-1]
            if len(found) < size:
                asked[lane] = 0  # the lane's last due row is read
            if read_on:
                if found:
                    heapq.heappush(heap, (rank, found[0][1], found[0][0], lane, False))
                continue
        rows = ahead[lane]
        if not rows:  # not expected: the walk read this head in the same transaction
            continue
        row = rows.pop()
        chosen.append(row)
        if rows:
            heapq.heappush(heap, (rank, rows[-1][1], rows[-1][0], lane, False))
        elif len(chosen) < need and asked[lane]:  # used up, and there may be more after it
            heapq.heappush(heap, (rank, row[1], row[0], lane, True))
    return chosen


def _sqlite_order(value: Any) -> tuple[int, Any]:
    """A sort key ordering stored values of any type as SQLite does (numbers, then text, then blobs).

    A priority is an integer when sitq wrote it, but a row changed around sitq
    may hold text ('high'): Python cannot compare that with an int, and every
    claim raised. Ordered as the claim index orders it, such a row is claimed
    and then ends failed on its own (see ``_fail_unreadable``).
    """
    if type(value) is int or type(value) is float:
        return 1, value
    if type(value) is Undecodable:  # text that is not UTF-8 (read with tolerant_text): among the text, roughly
        return 2, str(value)
    return (2, value) if type(value) is str else (3, value) if type(value) is bytes else (0, 0)


def _expired_too_often(expiries: Any, max_expiries: Any) -> bool:
    """Whether a task taken over from an expired lease has now used up ``max_lease_expiries``.

    Counts of another type (a row changed around sitq) are not compared: the
    row is claimed and then ends failed, saying which value is wrong.
    """
    return _is_number(expiries) and _is_number(max_expiries) and expiries + 1 >= max_expiries
