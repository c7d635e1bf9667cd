"""Shared test helpers: bounded waits instead of sleeps, and a clean plugin manager per test."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator

import pytest

from sitq_core.plugins import reset_plugin_manager


async def wait_until(predicate: Callable[[], Awaitable[bool]], timeout: float = 10.0, interval: float = 0.01) -> None:
    """Poll an async predicate until it is true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)


@pytest.fixture(autouse=True)
def _fresh_plugin_manager() -> Iterator[None]:
    """Each test discovers plugins anew, so a test's registrations never leak into another."""
    reset_plugin_manager()
    yield
    reset_plugin_manager()
