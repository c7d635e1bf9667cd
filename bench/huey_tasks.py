"""huey's side of the benchmark: a SqliteHuey-equivalent instance and the same trivial tasks.

The database path and synchronous setting come from the environment
(``BENCH_HUEY_DB``, ``BENCH_SYNC``), so the consumer process and the benchmark
process open the same store. Durability equals sitq's: WAL journal (huey's
default) and ``PRAGMA synchronous`` set to the same value as sitq's
(``SqliteHuey(fsync=True)`` sets FULL; for NORMAL huey has no option, so this
subclass sets the pragma on each new connection).
"""

from __future__ import annotations

import os
import time
from typing import Any

from huey import Huey
from huey.storage import SqliteStorage


class BenchSqliteStorage(SqliteStorage):  # type: ignore[misc]
    """huey's SqliteStorage with an explicit ``synchronous`` pragma (FULL or NORMAL)."""

    def __init__(self, *args: Any, synchronous: str = "FULL", **kwargs: Any) -> None:
        self._synchronous = synchronous
        super().__init__(*args, **kwargs)

    def _create_connection(self) -> Any:
        conn = super()._create_connection()
        conn.execute(f"pragma synchronous={self._synchronous}")
        return conn


class BenchHuey(Huey):  # type: ignore[misc]
    storage_class = BenchSqliteStorage


huey = BenchHuey(
    "bench",
    filename=os.environ.get("BENCH_HUEY_DB", "huey-bench.db"),
    synchronous=os.environ.get("BENCH_SYNC", "FULL"),
    journal_mode="wal",
)


@huey.task()
def noop() -> int:
    return 1


@huey.task()
def stamp() -> float:
    return time.time()


@huey.task()
def sleep_stamp(seconds: float) -> float:
    time.sleep(seconds)
    return time.time()
