"""The warning of a ``get_result`` whose answer came too late names its timeout as given, and no sole culprit.

It read "the backend did not answer within 0.0 s" for a timeout of 0.04 s,
while the store was fine: the event loop had been blocked (a ``time.sleep``
in another coroutine), which delays every answer just as well.
"""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from sitq import SQLiteBackend, TaskQueue

import sitq_test_tasks as tasks


@pytest.mark.asyncio
async def test_a_late_answer_is_logged_with_the_timeout_given_and_the_blocked_loop_as_a_cause(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with TaskQueue(SQLiteBackend(":memory:")) as queue:
        task_id = await queue.enqueue(tasks.add, 1)
        with caplog.at_level(logging.WARNING, logger="sitq"):
            waiting = asyncio.create_task(queue.get_result(task_id, timeout=0.04))
            await asyncio.sleep(0)  # it has begun waiting
            time.sleep(1.0)  # noqa: ASYNC251 -- the scenario, not a wait: a coroutine blocks the loop past the timeout
            assert await waiting is None
    lines = [r.getMessage() for r in caplog.records if task_id in r.getMessage()]
    assert len(lines) == 1
    assert "0.04 s" in lines[0] and "blocked event loop" in lines[0]
    assert "did not answer" not in lines[0]
