"""sitq_core.bounded.within: a bounded wait that never loses a cancel (see the module's docstring)."""

from __future__ import annotations

import asyncio

import pytest

from sitq_core.bounded import within


@pytest.mark.asyncio
async def test_returns_what_the_awaitable_gives_in_time() -> None:
    event = asyncio.Event()
    asyncio.get_running_loop().call_soon(event.set)
    assert await within(event.wait(), 5) is True
    assert await within(asyncio.sleep(0, "value"), None) == "value"


@pytest.mark.asyncio
async def test_times_out_and_cancels_the_awaitable() -> None:
    inner = asyncio.ensure_future(asyncio.Event().wait())
    with pytest.raises(TimeoutError):
        await within(inner, 0.01)
    assert inner.cancelled()
    with pytest.raises(TimeoutError):
        await within(asyncio.Event().wait(), 0)


@pytest.mark.asyncio
async def test_an_error_of_the_awaitable_is_raised_as_is() -> None:
    async def fails() -> None:
        raise KeyError("mine")

    with pytest.raises(KeyError, match="mine"):
        await within(fails(), 5)


@pytest.mark.asyncio
async def test_a_cancel_landing_as_the_awaitable_ends_is_not_swallowed() -> None:
    """asyncio.wait_for (3.11) returned the result here, and the cancelled task went on."""
    event = asyncio.Event()
    waiting = asyncio.Event()

    async def waiter() -> str:
        waiting.set()
        await within(event.wait(), 30)
        return "went on"

    task = asyncio.create_task(waiter())
    await waiting.wait()
    await asyncio.sleep(0)  # the inner wait is suspended on the event now
    event.set()  # its end ...
    task.cancel()  # ... and the cancel, in one loop step
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.asyncio
async def test_a_timeout_inside_a_task_being_cancelled_is_a_timeout() -> None:
    """asyncio.timeout raised CancelledError here on Python 3.11.0-3.11.2 (a cleanup under a cancel)."""
    started = asyncio.Event()

    async def cleans_up_when_cancelled() -> str:
        try:
            started.set()
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            try:
                await within(asyncio.Event().wait(), 0.01)
            except TimeoutError:
                return "timed out"
        return "not cancelled"

    task = asyncio.create_task(cleans_up_when_cancelled())
    await started.wait()
    task.cancel()
    assert await task == "timed out"


@pytest.mark.asyncio
async def test_a_cancelled_caller_goes_on_only_once_the_awaitable_has_unwound() -> None:
    """As with asyncio.wait_for: a give-back cut short by a stop has ended before the stop moves on."""
    order: list[str] = []
    started = asyncio.Event()

    async def slow_to_unwind() -> None:
        try:
            started.set()
            await asyncio.Event().wait()
        finally:
            order.append("inner unwinding")
            await asyncio.sleep(0.01)
            order.append("inner unwound")

    async def caller() -> None:
        try:
            await within(slow_to_unwind(), 30)
        finally:
            order.append("caller ended")

    task = asyncio.create_task(caller())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert order == ["inner unwinding", "inner unwound", "caller ended"]
