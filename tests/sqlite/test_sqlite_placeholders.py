"""sitq_sqlite's SQL uses plain ``?`` placeholders only, never numbered ones (``?1``, ``?2`` ...).

CPython 3.12.0 to 3.12.3 warn about every numbered placeholder bound from a
sequence (python/cpython#117995: the check meant for ``:name`` placeholders
also caught ``?NNN``): "DeprecationWarning: Binding 3 ('?3') is a named
parameter, but you supplied a sequence ...". With warnings as errors (pytest's
``filterwarnings = error``, ``python -W error``) each such statement raised, the
worker took it for a backend error and retried its claim forever: no task ran.
"""

from __future__ import annotations

import ast
import asyncio
import re
import sqlite3
import warnings
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest

import sitq_sqlite
from sitq import SQLiteBackend, TaskQueue, Worker
from sitq_core.models import Task, new_id

import sitq_test_tasks as tasks

SOURCES = sorted(Path(sitq_sqlite.__file__).parent.glob("*.py"))
NUMBERED = re.compile(r"\?[0-9]")


@contextmanager
def sqlite_deprecations_as_errors() -> Iterator[None]:
    """A DeprecationWarning raised in sitq_sqlite's code (its sqlite3 calls) is an error, as under ``-W error``.

    The filter is process-wide, so it holds on sitq_sqlite's connection thread too.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("error", category=DeprecationWarning, module=r"sitq_sqlite\.")
        yield


def _strings(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """Every string literal (f-string parts included) outside docstrings, with its line; an f-string part
    ending in ``?`` before a replacement field counts as ``?N`` (a number built at run time)."""
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node.lineno, node.value
        elif isinstance(node, ast.JoinedStr):
            for part, after in zip(node.values, node.values[1:], strict=False):
                if (
                    isinstance(part, ast.Constant)
                    and str(part.value).endswith("?")
                    and isinstance(after, ast.FormattedValue)
                ):
                    yield part.lineno, f"{part.value}0"


@pytest.mark.parametrize("source", SOURCES, ids=[path.name for path in SOURCES])
def test_no_sql_string_uses_numbered_placeholders(source: Path) -> None:
    """Cheap guard for the hot paths' statements, which the interpreters tested here (3.11) never warn about."""
    found = [
        f"{source.name}:{line}: {text!r}"
        for line, text in _strings(ast.parse(source.read_text(), str(source)))
        if NUMBERED.search(text)
    ]
    assert not found, "numbered placeholders warn on Python 3.12.0-3.12.3 (python/cpython#117995):\n" + "\n".join(found)


@pytest.mark.asyncio
async def test_a_worker_runs_its_tasks_when_sqlite3_deprecations_are_errors(tmp_path: Path) -> None:
    path = tmp_path / "tasks.db"
    with sqlite_deprecations_as_errors():
        async with TaskQueue(SQLiteBackend(path)) as queue:
            lanes = [queue.with_options(queue_name=f"q{i % 3}", priority=i % 2) for i in range(6)]
            ids = [await lane.enqueue(tasks.add, i, 1) for i, lane in enumerate(lanes)]
            worker = Worker(queue.backend, max_concurrency=2, poll_interval=0.05)
            await worker.start()
            try:
                results = await asyncio.gather(*(queue.get_result(task_id, timeout=10) for task_id in ids))
            finally:
                await worker.stop(timeout=10)
    assert [result and (result.status, queue.deserialize_result(result)) for result in results] == [
        ("success", i + 1) for i in range(6)
    ]


@pytest.mark.asyncio
async def test_lane_walks_releases_and_unreadable_rows_bind_when_sqlite3_deprecations_are_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The statements a plain run seldom reaches: the lane walk going on after its first lanes, a lease given
    back, and a claimed row that cannot be read (it fails in the store)."""
    import sitq_sqlite.claims as claims

    monkeypatch.setattr(claims, "_FIRST_LANES", 2)  # walk lane by lane, on past the first two lanes
    monkeypatch.setattr(claims, "_SCAN_ROWS_PER_LANE", 0)
    path = tmp_path / "paths.db"
    batch = [Task(id=new_id(), payload=b"ok", queue=f"q{i % 4}", priority=i % 2) for i in range(12)]
    with sqlite_deprecations_as_errors():
        async with SQLiteBackend(path) as backend:
            await backend.enqueue_many(batch)
            with closing(sqlite3.connect(path, isolation_level=None)) as conn:
                conn.execute("UPDATE tasks SET payload = 'x' WHERE id = ?", (batch[0].id,))
            first = await backend.reserve(worker_id="w", limit=4, lease_seconds=30)
            assert len(first) == 4
            assert all([await backend.release(lease) for lease in first])
            claimed = []
            while leases := await backend.reserve(worker_id="w", limit=3, lease_seconds=30):
                claimed += leases
            assert sorted(lease.id for lease in claimed) == sorted(task.id for task in batch[1:])
            unreadable = await backend.get_result(batch[0].id)
            assert unreadable is not None and unreadable.status == "failed", unreadable
