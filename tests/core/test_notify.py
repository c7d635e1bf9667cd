"""The in-process Notifier: a notice between a check and the wait that follows it is not missed."""

from __future__ import annotations

import asyncio
import threading

import pytest

from sitq_core.notify import Notifier

from sitq_test_helpers import wait_until


@pytest.mark.asyncio
async def test_a_notice_after_the_mark_ends_the_wait_at_once() -> None:
    notifier = Notifier()
    mark = notifier.seq
    notifier.notify(("sitq", "result", "other"))  # any key: sent after the check, before the wait
    assert await asyncio.wait_for(notifier.wait(("sitq", "result", "mine"), 30, since=mark), 5)


@pytest.mark.asyncio
async def test_without_a_notice_since_the_mark_the_wait_times_out() -> None:
    notifier = Notifier()
    mark = notifier.seq
    assert await notifier.wait("key", 0.01, since=mark) is False
    assert notifier.seq == mark


@pytest.mark.asyncio
async def test_notify_all_wakes_every_key_from_another_thread() -> None:
    notifier = Notifier()
    waits = [asyncio.create_task(notifier.wait(key, 30)) for key in ("a", "b", ("sitq", "work"))]

    async def all_waiting() -> bool:
        return all(notifier.has_waiters(key) for key in ("a", "b", ("sitq", "work")))

    await wait_until(all_waiting, interval=0.001)
    thread = threading.Thread(target=notifier.notify_all)
    thread.start()
    assert await asyncio.wait_for(asyncio.gather(*waits), 5) == [True, True, True]
    thread.join()
    assert not notifier.has_waiters("a")
