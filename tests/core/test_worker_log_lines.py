"""What the worker's log lines say about a task: its error's type, when a retry is due, its start and success.

An operator reads these without querying the store: "failed ...: 'user_id'"
did not say it was a KeyError. The stored error stays ``str(exception)``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from sitq import SQLiteBackend, TaskQueue, Worker
from sitq_core.models import DEFAULT_QUEUE

import sitq_test_tasks as tasks
from sitq_test_helpers import wait_until

LOGGER = "sitq.worker"


@pytest_asyncio.fixture
async def queue(tmp_path: Path) -> AsyncIterator[TaskQueue]:
    async with TaskQueue(SQLiteBackend(tmp_path / "logs.db")) as q:
        yield q


def missing_key() -> object:
    return {}["user_id"]


def blank_error() -> None:
    raise ValueError()


def terminal_tricks() -> None:
    raise ValueError("\x1b[31mred\x1b[0m \u202eexe.txt")


async def _work(queue: TaskQueue, *task_ids: str, **options: object) -> None:
    worker = Worker(queue.backend, max_concurrency=2, poll_interval=0.05, **options)  # type: ignore[arg-type]
    await worker.start()
    try:
        for task_id in task_ids:
            assert await queue.get_result(task_id, timeout=20) is not None
    finally:
        await worker.stop()


def _lines(caplog: pytest.LogCaptureFixture, task_id: str, level: int) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == level and task_id in r.getMessage()
    ]


@pytest.mark.asyncio
async def test_a_failure_line_names_the_exception_type(queue: TaskQueue, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    task_id = await queue.enqueue(missing_key)
    await _work(queue, task_id)
    (line,) = _lines(caplog, task_id, logging.WARNING)
    assert line.endswith("failed after 1 attempt(s): KeyError: 'user_id'"), line
    result = await queue.get_result(task_id, timeout=0)
    assert result is not None and result.error == "'user_id'"  # the stored error is str(exception), as before


@pytest.mark.asyncio
async def test_a_failure_without_a_message_is_named_by_its_type_alone(
    queue: TaskQueue, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    task_id = await queue.enqueue(blank_error)
    await _work(queue, task_id)
    (line,) = _lines(caplog, task_id, logging.WARNING)
    assert line.endswith("failed after 1 attempt(s): ValueError"), line


@pytest.mark.asyncio
async def test_a_failure_line_escapes_what_would_drive_the_terminal(
    queue: TaskQueue, caplog: pytest.LogCaptureFixture
) -> None:
    """A task's error cannot recolour the operator's terminal or reorder the line (escapes, bidi controls)."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    task_id = await queue.enqueue(terminal_tricks)
    await _work(queue, task_id)
    (line,) = _lines(caplog, task_id, logging.WARNING)
    assert line.endswith("ValueError: \\x1b[31mred\\x1b[0m \\u202eexe.txt"), line
    assert "\x1b" not in line and "\u202e" not in line
    result = await queue.get_result(task_id, timeout=0)
    assert result is not None and result.error == "\x1b[31mred\x1b[0m \u202eexe.txt"  # stored as raised


@pytest.mark.asyncio
async def test_a_retry_line_names_the_type_and_when_the_retry_is_due(
    queue: TaskQueue, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    task_id = await queue.with_options(max_retries=1, retry_backoff=1000).enqueue(missing_key)
    worker = Worker(queue.backend, max_concurrency=1, poll_interval=0.05)
    await worker.start()
    try:

        async def retry_logged() -> bool:
            return bool(_lines(caplog, task_id, logging.INFO))

        await wait_until(retry_logged)  # the retry itself is due in 1000 s
    finally:
        await worker.stop()
    task = await queue.get_task(task_id)
    assert task is not None
    (line,) = [line for line in _lines(caplog, task_id, logging.INFO) if "retrying" in line]
    due = task.eta.isoformat(timespec="milliseconds")
    match = re.search(r"failed on attempt 1, retrying in ([0-9.]+) s \(at (\S+)\): KeyError: 'user_id'$", line)
    assert match is not None, line
    assert match.group(2) == due
    assert 990 < float(match.group(1)) <= 1000  # seconds from when the line was written: the 1000 s backoff


@pytest.mark.asyncio
@pytest.mark.parametrize("func", [tasks.add, tasks.async_add], ids=["sync", "async"])
async def test_debug_lines_for_each_start_and_success(
    queue: TaskQueue, caplog: pytest.LogCaptureFixture, func: object
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    task_id = await queue.enqueue(func, 2, 3)  # type: ignore[arg-type]
    await _work(queue, task_id)
    name = f"sitq_test_tasks:{func.__name__}"  # type: ignore[attr-defined]
    lines = _lines(caplog, task_id, logging.DEBUG)
    started = [line for line in lines if "started" in line]
    succeeded = [line for line in lines if "succeeded" in line]
    assert len(started) == 1 and f"({name}) started on queue {DEFAULT_QUEUE!r}, attempt 1" in started[0], lines
    assert len(succeeded) == 1, lines
    assert re.search(
        rf"\({re.escape(name)}\) on queue {DEFAULT_QUEUE!r} succeeded on attempt 1 in [0-9.]+ s$", succeeded[0]
    )


@pytest.mark.asyncio
async def test_no_start_or_success_lines_above_debug(queue: TaskQueue, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    task_id = await queue.enqueue(tasks.add, 2, 3)
    await _work(queue, task_id)
    assert not [line for line in _lines(caplog, task_id, logging.DEBUG)]
    assert not [r for r in caplog.records if r.name == LOGGER and task_id in r.getMessage()]
