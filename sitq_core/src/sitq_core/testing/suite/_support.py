"""Small helpers shared by the contracts (not part of the public API)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Iterator
from datetime import datetime, timedelta
from typing import Any, TypeVar

import pytest

from ...backend import Backend, Capability
from ...errors import ValidationError
from ...hookspecs import hookimpl
from ...models import ReservedTask, Task, new_id
from ...plugin_manager import SitqPluginManager
from ...plugins import use_plugin_manager
from ..clock import FakeClock
from ..fixtures import DEFAULT_TIMEOUT, kit_timeout

LEASE = 30.0
WORKER = "worker-1"
GUARD = 5.0  # seconds a call may take before the kit calls it hung (at the default SITQ_KIT_TIMEOUT)
RESULT_LATENCY = 1.0  # seconds a waiter may take to see a result written (the default waiter polls 1-50 ms)

T = TypeVar("T")
E = TypeVar("E", bound=BaseException)


def scaled(seconds: float) -> float:
    """``seconds`` stretched as far as ``SITQ_KIT_TIMEOUT`` is raised above its default (never shrunk).

    A slow CI machine raises the one documented knob; the per-call limits
    below follow it instead of failing there however long the whole test may take.
    """
    return seconds * max(1.0, kit_timeout() / DEFAULT_TIMEOUT)


def guard() -> float:
    """Seconds a call that should answer at once may take before the kit calls it hung."""
    return scaled(GUARD)


def result_latency() -> float:
    """Seconds a result waiter may take to see a result written."""
    return scaled(RESULT_LATENCY)


async def within(awaitable: Awaitable[T], contract: str, promise: str, seconds: float | None = None) -> T:
    """``await awaitable``, failing with ``contract: promise`` when it hangs (instead of hanging the run).

    ``seconds`` defaults to :func:`guard`.
    """
    if seconds is None:
        seconds = guard()
    try:
        return await asyncio.wait_for(awaitable, seconds)
    except TimeoutError:
        pytest.fail(f"{contract}: {promise} (no answer within {seconds:g} s)")


async def refused(awaitable: Awaitable[Any], error: type[E], contract: str, promise: str) -> E:
    """The ``error`` that ``awaitable`` must raise; failing with ``contract: promise`` when it returns.

    Another exception (a ``TypeError`` from comparing a naive datetime deep in the backend) fails
    with the promise too, naming what was raised instead.
    """
    try:
        await within(awaitable, contract, promise)
    except error as exc:
        return exc
    except Exception as exc:
        pytest.fail(f"{contract}: {promise} (it raised {type(exc).__name__}: {exc} instead)")
    pytest.fail(f"{contract}: {promise} (it returned without raising {error.__name__})")


async def rejected(awaitable: Awaitable[Any], contract: str, call: str, parameter: str) -> ValidationError:
    """The ``ValidationError`` naming ``parameter`` that ``call`` must raise; anything else fails, naming both."""
    promise = f"{call} must raise ValidationError(parameter={parameter!r})"
    error = await refused(awaitable, ValidationError, contract, promise)
    if parameter_of(error) != parameter:
        pytest.fail(f"{contract}: {promise}, got parameter={parameter_of(error)!r}: {error}")
    return error


def make_task(clock: FakeClock, **changes: Any) -> Task:
    """A queued task due now (by the fake clock), with a unique id."""
    now = clock.now()
    fields: dict[str, Any] = {
        "id": new_id(),
        "payload": b"payload-" + new_id().encode(),
        "eta": now,
        "enqueued_at": now,
    }
    fields.update(changes)
    return Task(**fields)


def is_aware_utc(value: datetime | None) -> bool:
    """True for an aware datetime with a zero UTC offset."""
    return value is not None and value.tzinfo is not None and value.utcoffset() == timedelta(0)


def close_to(a: datetime | None, b: datetime, tolerance: float = 0.001) -> bool:
    """True when ``a`` is within ``tolerance`` seconds of ``b`` (False for None or a naive ``a``, never a TypeError)."""
    if not isinstance(a, datetime) or a.tzinfo is None or a.utcoffset() is None:
        return False
    return abs((a - b).total_seconds()) <= tolerance


async def reserve_all(backend: Backend, *, limit: int = 100, **kwargs: Any) -> list[ReservedTask]:
    """Reserve with default worker id and lease."""
    kwargs.setdefault("worker_id", WORKER)
    kwargs.setdefault("lease_seconds", LEASE)
    return await backend.reserve(limit=limit, **kwargs)


async def reserve_one(backend: Backend, contract: str, **kwargs: Any) -> ReservedTask:
    """Reserve exactly one task or fail naming the contract."""
    got = await reserve_all(backend, limit=1, **kwargs)
    assert len(got) == 1, f"{contract}: reserve(limit=1) returned {len(got)} tasks while one task was due"
    return got[0]


async def enqueue_and_reserve(backend: Backend, clock: FakeClock, contract: str, **changes: Any) -> ReservedTask:
    """Enqueue one due task and reserve it."""
    await backend.enqueue(make_task(clock, **changes))
    return await reserve_one(backend, contract)


async def get(backend: Backend, task_id: str, contract: str) -> Task:
    """``get_task`` that must find the task."""
    task = await backend.get_task(task_id)
    assert task is not None, f"{contract}: get_task({task_id!r}) returned None for a stored task"
    return task


def parameter_of(error: BaseException) -> object:
    """The ``parameter`` a sitq error names (set dynamically by ``SitqError``)."""
    return getattr(error, "parameter", None)


def only_without(capability: Capability, backend: Backend, tested: frozenset[Capability], covered_by: str) -> None:
    """Skip a test of what a backend *without* ``capability`` must do, unless this backend really lacks it.

    It lacks it when neither the capabilities under test (``backend_capabilities``) nor the backend
    itself declare it. A ``backend_capabilities`` fixture that leaves out a capability the backend
    declares narrows what is tested: the contracts needing it skip, and so does this test, since the
    backend still does what the capability promises (``covered_by`` says what tests a declared one).
    """
    name = f"Capability.{capability.name}"
    if capability in tested:
        pytest.skip(f"declares {name}: {covered_by}")
    if capability in backend.capabilities:
        pytest.skip(
            f"backend_capabilities leaves out {name}, which the backend declares: "
            "what a backend without it must do is not tested"
        )


class _EndingsHeard:
    """A lifecycle observer recording what it hears of tasks that end failed or cancelled."""

    def __init__(self) -> None:
        self.heard: list[tuple[Any, ...]] = []

    @hookimpl
    def sitq_task_failed(self, task: Task, error: BaseException | str, will_retry: bool) -> None:
        self.heard.append(("failed", task.id, str(error), will_retry))

    @hookimpl
    def sitq_task_cancelled(self, task: Task, duration: float) -> None:
        self.heard.append(("cancelled", task.id))


@contextlib.contextmanager
def observers_hear() -> Iterator[list[tuple[Any, ...]]]:
    """What lifecycle observers hear inside the block: ``("failed", id, error, will_retry)``, ``("cancelled", id)``.

    The observer sits on an isolated plugin manager, made the process's one for
    the block (``sitq_core.store_endings.report`` notifies that one), so no
    installed plugin is loaded or disturbed.
    """
    manager = SitqPluginManager(load_entrypoints=False, strict=False)
    observer = _EndingsHeard()
    manager.register_plugin(observer, "sitq-kit-observer")
    with use_plugin_manager(manager):
        yield observer.heard
