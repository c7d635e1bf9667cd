"""The in-process Notifier: a notice between a check and the wait that follows it is not missed."""

from __future__ import annotations

import asyncio
import threading

import pytest

from sitq_core.notify import Notifier, record_mark, take_mark

from sitq_test_helpers import wait_until


@pytest.mark.asyncio
async def test_a_notice_between_subscribe_and_wait_ends_the_wait_at_once() -> None:
    notifier = Notifier()
    with notifier.subscribe("mine") as subscription:
        notifier.notify("mine")  # sent after the check, before the wait
        assert await asyncio.wait_for(subscription.wait(30), 5)
    assert not notifier.has_waiters("mine")


@pytest.mark.asyncio
async def test_a_notice_for_another_key_does_not_end_the_wait() -> None:
    notifier = Notifier()
    with notifier.subscribe("mine") as subscription:
        notifier.notify("other")
        assert await subscription.wait(0.01) is False


def test_only_tracked_keys_are_counted() -> None:
    notifier = Notifier()
    notifier.track("work")
    notifier.notify_many(["work", "result"])
    notifier.notify_all()
    assert (notifier.count("work"), notifier.count("result")) == (2, 0)


@pytest.mark.asyncio
async def test_marks_belong_to_the_callers_task_context() -> None:
    owner = object()

    async def caller(value: int) -> tuple[int | None, int | None]:
        record_mark(owner, value)
        child = await asyncio.create_task(asyncio.sleep(0, take_mark(owner)))  # the context copied into a child
        return child, take_mark(owner)

    assert await asyncio.gather(caller(1), caller(2)) == [(1, None), (2, None)]


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
