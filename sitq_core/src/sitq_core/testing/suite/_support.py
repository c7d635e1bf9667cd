"""Small helpers shared by the contracts (not part of the public API)."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Awaitable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

import pytest

from ...backend import Backend, Capability
from ...errors import ValidationError
from ...hookspecs import hookimpl
from ...models import Outcome, ReservedTask, Task, new_id
from ...plugin_manager import SitqPluginManager
from ...plugins import use_plugin_manager
from ..answers import WrongAnswer
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
    except WrongAnswer:  # an answer of the wrong type, where none was due: the promise is what broke
        pytest.fail(f"{contract}: {promise} (it returned without raising {error.__name__})")
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


async def exists_of(backend: Backend, contract: str) -> bool | None:
    """``await backend.exists()``, failing plainly when ``exists`` is a plain method (awaiting its bool would
    raise "object bool can't be used in 'await' expression")."""
    answer: object = backend.exists()
    if not inspect.isawaitable(answer):
        pytest.fail(
            f"{contract}: exists() must be 'async def' (it returned {answer!r}, not an awaitable: sitq stats awaits it)"
        )
    found: bool | None = await answer
    return found


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


async def unstored(backend: Backend, tasks: Sequence[Task | str]) -> str:
    """Why some of ``tasks`` (enqueued by the test; tasks or ids) are missing: those ``get_task`` does not find.

    ``""`` when the store has them all. Only called once a check failed, so passing tests pay nothing.
    """
    missing = []
    for position, task in enumerate(tasks, 1):
        task_id = task if isinstance(task, str) else task.id
        try:
            found = await backend.get_task(task_id)
        except Exception as exc:
            missing.append(f"{task_id} (task {position} of {len(tasks)}: get_task raised {type(exc).__name__})")
            continue
        if found is None:
            missing.append(f"{task_id} (task {position} of {len(tasks)})")
    if not missing:
        return ""
    shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
    return f"were all enqueued tasks stored? get_task finds no task {shown}"


async def stored_hint(backend: Backend, tasks: Sequence[Task | str]) -> str:
    """``": " + unstored(...)`` to append to a failure message, or ``""`` when every task is stored."""
    why = await unstored(backend, tasks)
    return f": {why}" if why else ""


async def count_problem(backend: Backend, call: str, got: Sequence[ReservedTask], tasks: Sequence[Task]) -> str:
    """What is actually wrong when ``call`` handed out ``len(got)`` tasks where ``tasks`` were all due.

    An enqueued task the store does not have is named first (the bug is in enqueue, not
    in the reserve); then a task handed out twice or one the test did not enqueue; then
    the due tasks the call left.
    """
    head = f"{call} returned {len(got)} tasks, expected {len(tasks)}"
    why = await unstored(backend, tasks)
    if why:
        return f"{head}: {why}"
    ids = [r.id for r in got]
    twice = sorted({i for i in ids if ids.count(i) > 1})
    if twice:
        return f"{head}: it handed out the same task more than once: {twice}"
    expected = {t.id for t in tasks}
    strangers = [i for i in ids if i not in expected]
    if strangers:
        return f"{head}: it handed out tasks that were not due (leased, scheduled later or final): {strangers}"
    left = [t.id for t in tasks if t.id not in ids]
    return f"{head}: every task is stored and due, but it left {left}"


async def reserve_exactly(backend: Backend, contract: str, tasks: Sequence[Task], **kwargs: Any) -> list[ReservedTask]:
    """Reserve every one of ``tasks`` (all due, the store holding no other): fail on a wrong count, saying why.

    Checked before a test unpacks or compares what came back, so an author reads
    what went wrong ("were all enqueued tasks stored?") instead of a ``ValueError``
    from the unpacking or a later promise the count broke.
    """
    got = await reserve_all(backend, **kwargs)
    if len(got) != len(tasks):
        pytest.fail(f"{contract}: {await count_problem(backend, 'reserve', got, tasks)}")
    return got


async def reserve_one(backend: Backend, contract: str, *, among: Sequence[Task] = (), **kwargs: Any) -> ReservedTask:
    """Reserve exactly one task or fail naming the contract.

    ``among``: the tasks the test enqueued, one of them due; when none comes back,
    the failure names those the store does not have.
    """
    got = await reserve_all(backend, limit=1, **kwargs)
    if len(got) != 1:
        hint = await stored_hint(backend, among) if not got else ""
        pytest.fail(f"{contract}: reserve(limit=1) returned {len(got)} tasks while one task was due{hint}")
    return got[0]


def one_per_outcome(
    accepted: object, outcomes: Sequence[Outcome], contract: str, call: str = "finish_many"
) -> list[bool]:
    """``accepted`` checked to be one bool per outcome, before a test unpacks or indexes it."""
    if not isinstance(accepted, list) or len(accepted) != len(outcomes):
        count = f"{len(outcomes)} outcome" + ("" if len(outcomes) == 1 else "s")
        pytest.fail(f"{contract}: {call} must return one bool per outcome: {count}, got {accepted!r}")
    return accepted


async def finish_one(backend: Backend, outcome: Outcome, contract: str) -> bool:
    """``finish_many([outcome])``'s one bool (a wrong answer fails saying so, not with a ValueError from unpacking)."""
    [ok] = one_per_outcome(await backend.finish_many([outcome]), [outcome], contract)
    return ok


async def exchange(
    backend: Backend, outcomes: Sequence[Outcome], contract: str, **kwargs: Any
) -> tuple[list[bool], list[ReservedTask]]:
    """``finish_and_reserve``'s ``(accepted, reserved)``, its shape checked before a test unpacks it."""
    answer: object = await backend.finish_and_reserve(outcomes, **kwargs)
    if not isinstance(answer, tuple) or len(answer) != 2:
        got = f"a {type(answer).__name__}" + (f" of {len(answer)}" if isinstance(answer, tuple) else "")
        pytest.fail(f"{contract}: finish_and_reserve must return a pair (accepted, reserved), got {got}: {answer!r}")
    accepted, reserved = answer
    one_per_outcome(accepted, outcomes, contract, "finish_and_reserve")
    if not isinstance(reserved, list):
        pytest.fail(f"{contract}: finish_and_reserve must return its reservations as a list, got {reserved!r}")
    return accepted, reserved


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
