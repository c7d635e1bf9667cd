"""A failed task's stored traceback starts at the task's own code, not in the worker's machinery.

A sync task's began with five sitq frames (the worker's execution, its thread pool, the call guard and
``current_task``'s wrapper) before the user's, an async task's with two: noise above the one frame that matters.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sitq import SQLiteBackend, TaskQueue, Worker

HEADER = "Traceback (most recent call last):"


def fails() -> None:
    raise ValueError("sync failure")


async def async_fails() -> None:
    raise ValueError("async failure")


def _lookup() -> None:
    {}["missing"]


def chained() -> None:
    try:
        _lookup()
    except KeyError as exc:
        raise RuntimeError("could not look it up") from exc


async def async_chained() -> None:
    try:
        _lookup()
    except KeyError as exc:
        raise RuntimeError("could not look it up") from exc


def _sections(traceback: str) -> list[list[str]]:
    """Each exception's lines in a chained traceback, from its "Traceback" header on."""
    sections: list[list[str]] = []
    for line in traceback.splitlines():
        if line == HEADER:
            sections.append([])
        if sections:
            sections[-1].append(line)
    return sections


async def _failed(
    tmp_path: Path, calls: list[tuple[Any, tuple[Any, ...]]], *, timeout: float | None = None
) -> list[Any]:
    async with TaskQueue(SQLiteBackend(tmp_path / "tb.db")) as queue:
        enqueuing = queue if timeout is None else queue.with_options(timeout=timeout)
        ids = [await enqueuing.enqueue(func, *args) for func, args in calls]
        worker = Worker(queue.backend, max_concurrency=1, prefetch=len(calls))  # sync ones share a thread batch
        await worker.start()
        try:
            results = [await queue.get_result(task_id, timeout=10) for task_id in ids]
        finally:
            await worker.stop()
    for result in results:
        assert result is not None and result.status == "failed", result
    return results


@pytest.mark.asyncio
@pytest.mark.parametrize("timeout", [None, 5.0], ids=["no-timeout", "timeout"])
@pytest.mark.parametrize("count", [1, 3], ids=["alone", "batched"])
@pytest.mark.parametrize(("func", "name"), [(fails, "fails"), (async_fails, "async_fails")], ids=["sync", "async"])
async def test_the_stored_traceback_starts_at_the_tasks_own_frame(
    tmp_path: Path, func: Any, name: str, count: int, timeout: float | None
) -> None:
    results = await _failed(tmp_path, [(func, ())] * count, timeout=timeout)
    for result in results:
        lines = result.traceback.splitlines()
        assert lines[0] == HEADER, result.traceback
        assert lines[1].startswith(f'  File "{__file__}"') and lines[1].endswith(f"in {name}"), result.traceback
        assert "sitq_core" not in result.traceback, result.traceback
        assert lines[-1] == f"ValueError: {'async' if name.startswith('async') else 'sync'} failure"


@pytest.mark.asyncio
@pytest.mark.parametrize(("func", "name"), [(chained, "chained"), (async_chained, "async_chained")])
async def test_a_chained_traceback_keeps_every_exception_each_from_its_own_first_user_frame(
    tmp_path: Path, func: Any, name: str
) -> None:
    (result,) = await _failed(tmp_path, [(func, ())])
    cause, raised = _sections(result.traceback)
    assert cause[1].endswith(f"in {name}") and "KeyError: 'missing'" in cause, result.traceback
    assert any(line.endswith("in _lookup") for line in cause)
    assert "The above exception was the direct cause of the following exception:" in cause
    assert raised[1].endswith(f"in {name}") and raised[-1] == "RuntimeError: could not look it up", result.traceback
    assert "sitq_core" not in result.traceback


@pytest.mark.asyncio
@pytest.mark.parametrize("count", [1, 3], ids=["alone", "batched"])
async def test_a_builtin_task_keeps_only_the_frame_that_called_it(tmp_path: Path, count: int) -> None:
    """``int("x")`` enqueued as is raises from C: of sitq's frames above it, only the call is kept."""
    results = await _failed(tmp_path, [(int, ("x",))] * count)
    for result in results:
        lines = result.traceback.splitlines()
        assert lines[0] == HEADER and "sitq_core" in lines[1], result.traceback
        frames = [line for line in lines if line.lstrip().startswith('File "')]
        assert len(frames) == 1, result.traceback  # five sitq frames before: noise above the error
        assert lines[-1] == "ValueError: invalid literal for int() with base 10: 'x'"
