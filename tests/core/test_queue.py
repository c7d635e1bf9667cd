"""TaskQueue against a real SQLite file: the API contract's producer side."""

from __future__ import annotations

import asyncio
import functools
import math
import threading
import types
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import pytest_asyncio

import sitq
from sitq import (
    Result,
    SerializationError,
    SQLiteBackend,
    SyncTaskQueue,
    TaskQueue,
    TaskQueueError,
    ValidationError,
    Worker,
)
from sitq_core import Call
from sitq_core.errors import safe_repr
from sitq_core.models import TaskStatus

import sitq_test_tasks as tasks
from sitq_test_helpers import BROKEN_ZONES


@pytest_asyncio.fixture
async def queue(tmp_path: Path) -> AsyncIterator[TaskQueue]:
    async with TaskQueue(SQLiteBackend(tmp_path / "q.db")) as q:
        yield q


def test_backend_is_required() -> None:
    with pytest.raises(ValidationError) as info:
        TaskQueue(None)  # type: ignore[arg-type]
    assert info.value.parameter == "backend"


@pytest.mark.asyncio
async def test_enqueue_returns_unique_ids_before_any_connect(tmp_path: Path) -> None:
    queue = TaskQueue(SQLiteBackend(tmp_path / "lazy.db"))
    ids = {await queue.enqueue(tasks.add, n) for n in range(20)}
    assert len(ids) == 20 and all(isinstance(i, str) and i for i in ids)
    assert (await queue.counts())["queued"] == 20
    await queue.close()


@pytest.mark.asyncio
async def test_a_function_enqueued_again_keeps_its_name_and_task_options(queue: TaskQueue) -> None:
    """enqueue works out a function's name and sitq task once; later enqueues must store the same."""
    decorated = sitq.task(tasks.add, queue_name="special", max_retries=4)
    ids = [await queue.enqueue(decorated, n) for n in range(2)] + [await queue.enqueue(tasks.add, n) for n in range(2)]
    stored = [await queue.backend.get_task(task_id) for task_id in ids]
    assert [(t.function_name, t.queue, t.max_retries) for t in stored if t is not None] == [
        ("sitq_test_tasks:add", "special", 4),
        ("sitq_test_tasks:add", "special", 4),
        ("sitq_test_tasks:add", "default", 0),
        ("sitq_test_tasks:add", "default", 0),
    ]


@pytest.mark.asyncio
async def test_what_enqueue_remembers_of_a_task_does_not_keep_it_alive(queue: TaskQueue) -> None:
    import gc
    import weakref

    decorated = sitq.task(tasks.add, max_retries=2)
    await queue.enqueue(decorated, 1)
    gone = weakref.ref(decorated)
    del decorated
    gc.collect()
    assert gone() is None


@pytest.mark.asyncio
async def test_non_callable_is_refused_and_nothing_stored(queue: TaskQueue) -> None:
    await queue.enqueue(tasks.add, 1)
    with pytest.raises(ValidationError) as info:
        await queue.enqueue("not callable")  # type: ignore[arg-type]
    assert info.value.parameter == "func"
    assert (await queue.counts())["queued"] == 1


def _numbers(n: int) -> Any:
    yield from range(n)


async def _async_numbers(n: int) -> Any:
    for number in range(n):
        yield number


class _Lines:
    """A callable object whose ``__call__`` is a generator (and one whose ``__call__`` is an async generator)."""

    def __call__(self, n: int) -> Any:
        yield from range(n)


class _AsyncLines:
    async def __call__(self, n: int) -> Any:
        for number in range(n):
            yield number


def _listed(func: Any) -> Any:
    """A functools.wraps decorator that runs a generator to a list: the wrapper is a fine task."""

    @functools.wraps(func)
    def as_list(*args: Any) -> list[Any]:
        return list(func(*args))

    return as_list


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "func",
    [
        _numbers,
        _async_numbers,
        functools.partial(_numbers, 3),
        sitq.task(_numbers),
        sitq.task(_async_numbers),
        _Lines(),
        _AsyncLines(),
        functools.partial(_Lines()),
    ],
    ids=["generator", "async-generator", "partial", "task", "async-task", "object", "async-object", "partial-object"],
)
async def test_a_generator_function_is_refused_at_enqueue(queue: TaskQueue, func: Any) -> None:
    """Its call returns a generator without running the body: the task did nothing, then failed in the worker.

    A callable object whose ``__call__`` is a generator was stored, then failed the same way.
    """
    await queue.enqueue(tasks.add, 1)
    for _ in range(2):  # every time: what enqueue remembers per function is only that of accepted ones
        with pytest.raises(ValidationError, match="generator function") as info:
            await queue.enqueue(func, 3)
        assert info.value.parameter == "func"
    with pytest.raises(ValidationError, match=r"calls\[1\]: .*generator function") as many:
        await queue.enqueue_many([(tasks.add, (1,)), (func, (3,))])
    assert many.value.parameter == "calls"
    assert (await queue.counts())["queued"] == 1


@types.coroutine
def _legacy_coroutine(n: int) -> Any:
    yield from asyncio.sleep(0).__await__()
    return n * 2


@pytest.mark.asyncio
async def test_a_wrapper_that_runs_a_generator_is_a_task(queue: TaskQueue) -> None:
    worker = Worker(queue.backend)
    await worker.start()
    try:
        result = await queue.get_result(await queue.enqueue(_listed(_numbers), 3), timeout=10)
        # a @types.coroutine generator returns an awaitable: the worker awaits it, so it is a task too
        legacy = await queue.get_result(await queue.enqueue(_legacy_coroutine, 21), timeout=10)
        partial = await queue.get_result(await queue.enqueue(functools.partial(_legacy_coroutine, 4)), timeout=10)
    finally:
        await worker.stop()
    assert result is not None and queue.deserialize_result(result) == [0, 1, 2]
    assert legacy is not None and queue.deserialize_result(legacy) == 42, legacy
    assert partial is not None and queue.deserialize_result(partial) == 8, partial


@pytest.mark.asyncio
async def test_naive_eta_refused(queue: TaskQueue) -> None:
    with pytest.raises(ValidationError) as info:
        await queue.enqueue(tasks.add, 1, eta=datetime.now())
    assert info.value.parameter == "eta"
    assert (await queue.counts())["queued"] == 0


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "eta",
    [
        datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5))),  # past year 9999 in UTC
        # (before year 1 in UTC is a past eta: it means now, see below)
    ],
)
async def test_an_eta_utc_cannot_express_is_a_validation_error(queue: TaskQueue, eta: datetime) -> None:
    with pytest.raises(ValidationError) as info:
        await queue.enqueue(tasks.add, 1, eta=eta)
    assert info.value.parameter == "eta" and "UTC" in str(info.value)
    assert (await queue.counts())["queued"] == 0


@pytest.mark.asyncio
async def test_aware_eta_normalised_to_utc(queue: TaskQueue) -> None:
    local = datetime(2030, 1, 2, 3, 4, 5, tzinfo=ZoneInfo("Asia/Tokyo"))
    task = await queue.get_task(await queue.enqueue(tasks.add, 1, eta=local))
    assert task is not None
    assert task.eta == local and task.eta.utcoffset() == timedelta(0)


@pytest.mark.asyncio
async def test_past_eta_means_now(queue: TaskQueue) -> None:
    task_id = await queue.enqueue(tasks.add, 1, eta=datetime(2000, 1, 1, tzinfo=UTC))
    task = await queue.get_task(task_id)
    assert task is not None and task.eta > datetime(2020, 1, 1, tzinfo=UTC)
    leases = await queue.backend.reserve(worker_id="t", limit=5, lease_seconds=5)
    assert [lease.id for lease in leases] == [task_id]


@pytest.mark.asyncio
async def test_a_past_eta_before_what_utc_can_express_also_means_now(queue: TaskQueue) -> None:
    """Year 1 at +05:00 has no UTC datetime: it was refused, though any past eta means now."""
    ancient = datetime(1, 1, 1, 3, tzinfo=timezone(timedelta(hours=5)))
    task_id = await queue.enqueue(tasks.add, 1, eta=ancient)
    task = await queue.get_task(task_id)
    assert task is not None and task.eta > datetime(2020, 1, 1, tzinfo=UTC)
    with pytest.raises(ValidationError, match="outside the datetimes UTC can express"):  # the far future still is
        await queue.enqueue(tasks.add, 1, eta=datetime(9999, 12, 31, 22, tzinfo=timezone(timedelta(hours=-5))))


@pytest.mark.asyncio
async def test_unserialisable_payload(queue: TaskQueue) -> None:
    with pytest.raises(SerializationError):
        await queue.enqueue(tasks.echo, threading.Lock())
    assert (await queue.counts())["queued"] == 0


@pytest.mark.asyncio
async def test_get_result_validation_and_timeouts(queue: TaskQueue) -> None:
    with pytest.raises(ValidationError) as info:
        await queue.get_result("", timeout=0)
    assert info.value.parameter == "task_id"
    with pytest.raises(ValidationError) as info:
        await queue.get_result("abc", timeout=-1)
    assert info.value.parameter == "timeout"
    assert await queue.get_result("unknown-id", timeout=0) is None
    assert await queue.get_result("unknown-id", timeout=0.05) is None
    task_id = await queue.enqueue(tasks.add, 1)
    assert await queue.get_result(task_id, timeout=0) is None


class _BadRepr:
    """An argument whose ``repr`` raises, as a caller's object may."""

    def __repr__(self) -> str:
        raise RuntimeError("no repr")


@pytest.mark.asyncio
async def test_an_argument_whose_repr_raises_gets_a_validation_error_that_prints(queue: TaskQueue) -> None:
    """The checks built their message with ``{value!r}``: the value's RuntimeError came out instead."""
    calls = [
        (lambda: queue.get_result(_BadRepr()), "task_id"),  # type: ignore[arg-type]
        (lambda: queue.get_result("t", timeout=_BadRepr()), "timeout"),  # type: ignore[arg-type]
        (lambda: queue.enqueue(_BadRepr()), "func"),  # type: ignore[arg-type]
    ]
    for call, parameter in calls:
        with pytest.raises(ValidationError) as info:
            await call()
        assert info.value.parameter == parameter
        assert "<_BadRepr object (repr failed: RuntimeError: no repr)>" in str(info.value)
    for make, parameter in ((lambda: TaskQueue(_BadRepr())), "backend"), ((lambda: SQLiteBackend(_BadRepr())), "path"):  # type: ignore[arg-type]
        with pytest.raises(ValidationError) as info:
            make()
        assert info.value.parameter == parameter and "repr failed" in str(info.value)


def test_deserialize_result_validation(tmp_path: Path) -> None:
    queue = TaskQueue(SQLiteBackend(tmp_path / "d.db"))
    with pytest.raises(ValidationError) as info:
        queue.deserialize_result(None)  # type: ignore[arg-type]
    assert info.value.parameter == "result"
    assert queue.deserialize_result(Result(id="r", task_id="t", status="success", value=None)) is None
    with pytest.raises(SerializationError):
        queue.deserialize_result(Result(id="r", task_id="t", status="success", value=b"\x00garbage"))


@pytest.mark.asyncio
async def test_result_record_is_complete(queue: TaskQueue) -> None:
    worker = Worker(queue.backend)
    await worker.start()
    task_id = await queue.enqueue(tasks.add, 2, b=3)
    result = await queue.get_result(task_id, timeout=10)
    await worker.stop()
    assert result is not None
    assert (result.task_id, result.status, result.attempts) == (task_id, "success", 1)
    assert queue.deserialize_result(result) == 5
    assert result.error is None and result.traceback is None
    for stamp in (result.enqueued_at, result.started_at, result.finished_at):
        assert stamp is not None and stamp.utcoffset() == timedelta(0)
    assert result.enqueued_at <= result.started_at <= result.finished_at  # type: ignore[operator]


@pytest.mark.asyncio
async def test_with_options_never_collides_with_task_kwargs(queue: TaskQueue) -> None:
    view = queue.with_options(priority=7, queue_name="reports", timeout=9, max_retries=2, delay=60)
    task_id = await view.enqueue(tasks.echo, value={"timeout": 1})
    task = await queue.get_task(task_id)
    assert task is not None
    assert (task.priority, task.queue, task.timeout, task.max_retries) == (7, "reports", 9.0, 2)
    assert task.eta > task.enqueued_at + timedelta(seconds=59)
    _func, _args, kwargs = queue.serializer.loads_call(task.payload)
    assert kwargs == {"value": {"timeout": 1}}


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "bad",
    [
        {"delay": -1},
        {"delay": math.inf},
        {"delay": 10**400},
        {"retry_backoff": 10**400},
        {"retry_backoff": math.inf},
        {"delay": 2**1100},
        {"retry_backoff": 2**1100},
        {"timeout": -1},
        {"timeout": 0},
        {"timeout": math.nan},
        {"priority": "high"},
        {"priority": 2**63},
        {"priority": -(2**63) - 1},
        {"max_retries": -1},
        {"max_retries": 2**70},
        {"max_lease_expiries": 2**63},
        {"queue_name": ""},
        {"queue_name": "a\x00b"},
        {"max_lease_expiries": 0},
    ],
)
async def test_with_options_validates(queue: TaskQueue, bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as info:
        queue.with_options(**bad)
    assert info.value.parameter == next(iter(bad))
    assert next(iter(bad)) in str(info.value)


@pytest.mark.parametrize("name", ["delay", "retry_backoff"])
@pytest.mark.parametrize("value", [math.inf, 2**1100], ids=["inf", "2**1100"])
def test_task_option_seconds_must_be_finite_and_timeout_says_none_means_no_limit(
    queue: TaskQueue, name: str, value: float
) -> None:
    """``timeout=inf`` was stored (and 1e300 too) while ``delay=inf`` was refused: one rule for all three."""
    with pytest.raises(ValidationError) as info:
        queue.with_options(**{name: value})
    assert info.value.parameter == name
    assert f"{name} must be a finite number of seconds, got {safe_repr(value)}" in str(info.value)
    assert len(str(info.value)) < 600  # a 332-digit int is shortened in the message, twice it was 700 characters
    assert info.value.value == value  # and kept whole on the error


@pytest.mark.asyncio
@pytest.mark.parametrize("timeout", [math.inf, 1e300, 10**30, 2**1100], ids=["inf", "1e300", "10**30", "2**1100"])
async def test_a_get_result_timeout_of_any_size_waits_and_never_overflows(queue: TaskQueue, timeout: float) -> None:
    """``timeout=2**1100`` said "too large to be a number of seconds" while inf and 10**30 waited: all wait."""
    task_id = await queue.enqueue(tasks.add, 1, b=2)
    worker = Worker(queue.backend)
    await worker.start()
    try:
        result = await queue.get_result(task_id, timeout=timeout)
    finally:
        await worker.stop()
    assert result is not None and queue.deserialize_result(result) == 3
    with pytest.raises(ValidationError) as info:
        await queue.get_result(task_id, timeout=-(2**1100))
    assert info.value.parameter == "timeout" and "must be >= 0" in str(info.value)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("delay", math.nan),
        ("delay", math.inf),
        ("retry_backoff", math.nan),
        ("retry_backoff", math.inf),
        ("timeout", math.nan),
    ],
)
def test_nan_and_infinite_seconds_get_one_message(queue: TaskQueue, name: str, value: float) -> None:
    """NaN said "must be a number of seconds or None, got nan" while inf said "must be a finite number"."""
    with pytest.raises(ValidationError) as info:
        queue.with_options(**{name: value})
    assert info.value.parameter == name
    assert f"{name} must be a finite number of seconds, got {value!r}" in str(info.value)


@pytest.mark.asyncio
async def test_a_delay_past_the_last_storable_date_is_a_validation_error(queue: TaskQueue) -> None:
    await queue.enqueue(tasks.add, 0)
    with pytest.raises(ValidationError) as info:
        await queue.with_options(delay=1e20).enqueue(tasks.add, 1)
    assert info.value.parameter == "delay"
    extreme = await queue.with_options(priority=2**63 - 1, max_retries=2**63 - 1).enqueue(tasks.add, 2)
    task = await queue.get_task(extreme)
    assert task is not None and (task.priority, task.max_retries) == (2**63 - 1, 2**63 - 1)
    assert (await queue.counts())["queued"] == 2


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "item", [(tasks.add, 5), (tasks.add, "12"), (tasks.add, (), 5), (tasks.add, (), {1: 2}), (5, ()), ("add", (1,))]
)
async def test_enqueue_many_names_a_malformed_item(queue: TaskQueue, item: tuple[Any, ...]) -> None:
    await queue.enqueue(tasks.add, 0)
    with pytest.raises(ValidationError) as info:
        await queue.enqueue_many([(tasks.add, (1,)), item])
    assert info.value.parameter == "calls"
    assert "calls[1]" in str(info.value)
    assert (await queue.counts())["queued"] == 1


@pytest.mark.asyncio
async def test_enqueue_many_in_one_batch(queue: TaskQueue) -> None:
    ids = await queue.enqueue_many([(tasks.add, (1, 2)), (tasks.add, (3,), {"b": 4}), tasks.boom])
    assert len(ids) == 3 == len(set(ids))
    assert (await queue.counts())["queued"] == 3
    with pytest.raises(ValidationError):
        await queue.enqueue_many([(tasks.add, (1,)), 42])
    assert (await queue.counts())["queued"] == 3
    assert await queue.enqueue_many([]) == []


@pytest.mark.asyncio
async def test_enqueue_many_takes_a_one_tuple_and_its_error_lists_that_shape(queue: TaskQueue) -> None:
    """``(func,)`` runs ``func()``, as documented: the message for a bad item names every accepted shape."""
    [task_id] = await queue.enqueue_many([(tasks.make_object,)])
    stored = await queue.get_task(task_id)
    assert stored is not None and stored.function_name == "sitq_test_tasks:make_object"
    worker = Worker(queue.backend)
    await worker.start()
    try:
        result = await queue.get_result(task_id, timeout=10)
    finally:
        await worker.stop()
    assert result is not None and result.status == TaskStatus.SUCCESS
    for bad in (42, (), (tasks.add, (1,), {}, "extra")):
        with pytest.raises(ValidationError) as info:
            await queue.enqueue_many([(tasks.add, (1,)), bad])
        assert "calls[1] must be a Call, a callable, or a (func[, args[, kwargs]]) tuple" in str(info.value)


@pytest.mark.asyncio
@pytest.mark.parametrize("size", [5, 700])
async def test_a_bad_item_late_in_a_batch_stores_nothing(queue: TaskQueue, size: int) -> None:
    """Large batches are serialised while earlier chunks are being inserted: a late failure must still roll back."""
    await queue.enqueue(tasks.add, 0)
    good = [(tasks.add, (n,)) for n in range(size - 1)]
    with pytest.raises(SerializationError):
        await queue.enqueue_many([*good, (tasks.add, (threading.Lock(),))])
    with pytest.raises(ValidationError) as info:
        await queue.enqueue_many([*good, (tasks.add, (1,)), 42])
    assert info.value.parameter == "calls"
    assert (await queue.counts())["queued"] == 1
    ids = await queue.enqueue_many(good)
    assert len(ids) == size - 1 and ids == sorted(ids)  # a batch's ids sort in batch order
    assert (await queue.counts())["queued"] == size


@pytest.mark.asyncio
async def test_a_large_mixed_batch_is_claimed_in_batch_order(queue: TaskQueue) -> None:
    """Rows sharing all columns but id and payload are inserted in groups; order and fields must survive."""
    calls = [(tasks.add, (n,)) for n in range(300)] + [(tasks.add, (1,), {"b": 2})] * 5
    calls += [(tasks.boom, ())] * 95 + [(tasks.add, (7,))] * 100
    ids = await queue.with_options(priority=2, max_retries=3).enqueue_many(calls)
    leases = await queue.backend.reserve(worker_id="t", limit=1000, lease_seconds=30)
    assert [lease.id for lease in leases] == ids
    first, boom = leases[0].task, leases[305].task
    assert (first.priority, first.max_retries, first.function_name) == (2, 3, "sitq_test_tasks:add")
    assert boom.function_name == "sitq_test_tasks:boom" and boom.payload != first.payload


@pytest.mark.asyncio
async def test_priorities_run_highest_first(queue: TaskQueue) -> None:
    low = await queue.with_options(priority=0).enqueue(tasks.add, 1)
    high = await queue.with_options(priority=5).enqueue(tasks.add, 2)
    mid = await queue.with_options(priority=3).enqueue(tasks.add, 3)
    leases = await queue.backend.reserve(worker_id="t", limit=3, lease_seconds=5)
    assert [lease.id for lease in leases] == [high, mid, low]


@pytest.mark.asyncio
async def test_cancel_queued_task(queue: TaskQueue) -> None:
    task_id = await queue.enqueue(tasks.add, 1)
    assert await queue.cancel(task_id) is True
    result = await queue.get_result(task_id, timeout=1)
    assert result is not None and result.status == "cancelled"
    assert await queue.cancel(task_id) is False
    assert await queue.cancel("unknown") is False
    assert await queue.requeue(task_id) is True
    task = await queue.get_task(task_id)
    assert task is not None and task.status == TaskStatus.QUEUED


@pytest.mark.asyncio
async def test_two_queues_share_one_backend(tmp_path: Path) -> None:
    backend = SQLiteBackend(tmp_path / "shared.db")
    async with backend:
        first, second = TaskQueue(backend), TaskQueue(backend, serializer="msgpack")
        a = await first.enqueue(tasks.add, 1, 2)
        b = await second.enqueue(tasks.add, 3, 4)
        worker = Worker(backend, max_concurrency=2)
        await worker.start()
        ra, rb = await first.get_result(a, timeout=10), await second.get_result(b, timeout=10)
        await worker.stop()
        assert ra is not None and rb is not None
        assert first.deserialize_result(ra) == 3 and second.deserialize_result(rb) == 7
        assert first.deserialize_result(rb) == 7  # a result carries its serializer's name


@pytest.mark.asyncio
async def test_memory_database_shared_by_queue_and_worker() -> None:
    backend = SQLiteBackend(":memory:")
    async with backend:
        queue = TaskQueue(backend)
        worker = Worker(backend)
        await worker.start()
        result = await queue.get_result(await queue.enqueue(tasks.async_add, 20, b=22), timeout=10)
        await worker.stop()
        assert result is not None and queue.deserialize_result(result) == 42


@pytest.mark.asyncio
async def test_async_with_backend_block_sleep_then_stop(tmp_path: Path) -> None:
    """The issue's scenario: enqueue, start a worker, sleep 1 s, stop: the result is ready."""
    import asyncio

    backend = SQLiteBackend(tmp_path / "block.db")
    async with backend:
        queue = TaskQueue(backend)
        task_id = await queue.enqueue(tasks.add, 40, 2)
        worker = Worker(backend)
        await worker.start()
        await asyncio.sleep(1)
        await worker.stop()
        result = await queue.get_result(task_id, timeout=0)
        assert result is not None and queue.deserialize_result(result) == 42


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("call", "parameter"),
    [
        (lambda q: q.list_tasks(limit=10**30), "limit"),
        (lambda q: q.list_tasks(offset=2**63), "offset"),
        (lambda q: q.get_task("a\x00b"), "task_id"),
        (lambda q: q.get_result("a\x00b", timeout=0), "task_id"),
    ],
)
async def test_out_of_range_lookups_are_validation_errors(queue: TaskQueue, call: Any, parameter: str) -> None:
    await queue.enqueue(tasks.add, 1)
    with pytest.raises(ValidationError) as info:
        await call(queue)
    assert info.value.parameter == parameter
    assert (await queue.counts())["queued"] == 1


@pytest.mark.parametrize("value", [1, None])
def test_an_unknown_option_in_with_options_names_it(value: object) -> None:
    """At run time too (the signatures only tell type checkers), on queues, views and sync queues alike.

    Given as None as well: None leaves a known option as it is, but a misspelt one is still refused.
    """
    import sitq
    from sitq_core.errors import ValidationError

    queue = sitq.TaskQueue("sqlite://")
    sync = sitq.SyncTaskQueue("sqlite://")
    options: dict[str, Any] = {"bogus": value}
    calls = (
        lambda: queue.with_options(**options),
        lambda: queue.with_options(priority=1).with_options(**options),
        lambda: sync.with_options(**options),
        lambda: sync.with_options(priority=1).with_options(**options),
    )
    try:
        for call in calls:
            with pytest.raises(ValidationError) as info:
                call()
            assert info.value.parameter == "bogus" and "max_retries" in str(info.value)
    finally:
        sync.close()


@pytest.mark.asyncio
@pytest.mark.parametrize("name", ["a\x00b", "bad\ud800", ""])
async def test_queue_names_a_store_cannot_hold_are_refused_everywhere(queue: TaskQueue, name: str) -> None:
    from sitq import Worker

    await queue.enqueue(tasks.add, 1)
    with pytest.raises(ValidationError) as info:
        await queue.list_tasks(queue=name)
    assert info.value.parameter == "queue"
    with pytest.raises(ValidationError):
        await queue.counts(queue=name)
    with pytest.raises(ValidationError) as info:
        Worker(queue.backend, queues=[name])
    assert info.value.parameter == "queues"
    with pytest.raises(ValidationError) as info:
        await queue.with_options(queue_name=name).enqueue(tasks.add, 2)
    assert info.value.parameter == "queue_name"
    assert (await queue.counts())["queued"] == 1  # nothing else was stored


@pytest.mark.asyncio
async def test_requeue_with_a_past_eta_means_now(queue: TaskQueue) -> None:
    from sitq import Worker

    failing = await queue.with_options(max_retries=0).enqueue(tasks.boom)
    worker = Worker(queue.backend)
    await worker.start()
    assert (await queue.get_result(failing, timeout=10)) is not None
    await worker.stop()
    before = datetime.now(UTC)
    assert await queue.requeue(failing, eta=datetime(2000, 1, 1, tzinfo=UTC))
    task = await queue.get_task(failing)
    assert task is not None and task.eta >= before - timedelta(seconds=1), task.eta  # not ahead of waiting tasks


@pytest.mark.asyncio
async def test_a_function_whose_name_a_store_cannot_hold_is_stored_under_an_escaped_name(
    queue: TaskQueue,
) -> None:
    """A lone surrogate or NUL in a qualname used to fail the enqueue with a BackendError."""

    def odd() -> int:
        return 7

    odd.__qualname__ = "odd\ud800name\x00"
    task_id = await queue.enqueue(odd)
    stored = await queue.get_task(task_id)
    assert stored is not None and stored.function_name.endswith(":odd\\ud800name\\x00")
    worker = Worker(queue.backend)
    await worker.start()
    result = await queue.get_result(task_id, timeout=10)
    await worker.stop()
    assert result is not None and queue.deserialize_result(result) == 7


@pytest.mark.asyncio
async def test_a_queue_closes_a_backend_that_cannot_be_hashed() -> None:
    """A plugin defining __eq__ (as @dataclass does) is unhashable: close() raised TypeError and left it open."""
    from sitq_dictstore.backend import DictStoreBackend

    class Unhashable(DictStoreBackend):
        closed = False

        def __eq__(self, other: object) -> bool:
            return self is other

        __hash__ = None  # type: ignore[assignment]

        async def close(self) -> None:
            Unhashable.closed = True
            await super().close()

    queue = TaskQueue(Unhashable())
    assert await queue.enqueue(tasks.add, 1)
    await queue.close()
    assert Unhashable.closed


@pytest.mark.asyncio
@pytest.mark.parametrize("task_id", ["ab\udcffc", "a\x00b"])
async def test_a_task_id_no_store_can_hold_is_a_validation_error(tmp_path: Path, task_id: str) -> None:
    """A lone surrogate raised a bare UnicodeEncodeError on SQLite and a BackendError on PostgreSQL."""
    async with TaskQueue(SQLiteBackend(tmp_path / "ids.db")) as queue:
        for call in (queue.get_result(task_id, timeout=0), queue.get_task(task_id), queue.cancel(task_id)):
            with pytest.raises(ValidationError) as info:
                await call
            assert info.value.parameter == "task_id"


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("args", "kwargs"),
    [("abc", {}), (None, {}), (5, {}), ((), {1: 2}), ((), "x")],
    ids=["str", "None", "int", "key", "kw"],
)
async def test_a_call_item_with_bad_arguments_is_refused_like_a_tuple_item(
    queue: TaskQueue, args: Any, kwargs: Any
) -> None:
    """Call(...) items were stored as given; the worker then failed them (or ran f('a', 'b', 'c'))."""
    with pytest.raises(ValidationError, match=r"^calls\[1\]: (args|kwargs) must be") as error:
        await queue.enqueue_many([Call(tasks.add, (1, 2)), Call(tasks.add, args, kwargs)])
    assert error.value.parameter == "calls"
    assert (await queue.counts())["queued"] == 0, "nothing of the batch may be stored"
    [task_id] = await queue.enqueue_many([Call(tasks.add, [1, 2])])  # a list is taken, as in a tuple item
    assert await queue.get_task(task_id) is not None


@pytest.mark.asyncio
async def test_none_leaves_an_option_unchanged_on_a_view_as_on_the_queue(queue: TaskQueue) -> None:
    """view.with_options(priority=None) raised, and timeout=None cleared what the queue's None kept."""
    view = queue.with_options(priority=4, timeout=10).with_options(priority=None, timeout=None, queue_name=None)
    assert (view.options.priority, view.options.timeout, view.options.queue_name) == (4, 10, "default")
    stored = await queue.get_task(await view.enqueue(tasks.add, 1, 2))
    assert stored is not None and (stored.priority, stored.timeout) == (4, 10)


@pytest.mark.asyncio
async def test_close_ends_a_get_result_still_waiting_with_task_queue_error(tmp_path: Path) -> None:
    """A waiter used to outlive close(): it went on polling and reopened the store nobody would close."""
    queue = TaskQueue(f"sqlite:///{tmp_path / 'wait.db'}")
    await queue.connect()
    task_id = await queue.with_options(delay=3600).enqueue(tasks.add, 1, 2)  # never due: the waiter just waits
    forever = asyncio.ensure_future(queue.get_result(task_id))
    bounded = asyncio.ensure_future(queue.get_result(task_id, timeout=3600))
    await asyncio.sleep(0.05)  # both are inside get_result (a wait on notifications, not a timed poll)
    assert not forever.done() and not bounded.done()
    await queue.close()
    for waiter in (forever, bounded):
        assert waiter.done(), "close() returns once the waiters on its loop have left get_result"
        error = waiter.exception()
        assert isinstance(error, TaskQueueError) and error.task_id == task_id, error
        assert "the queue was closed while it waited" in str(error)
    await asyncio.sleep(0.05)
    assert queue.backend._db is None, "nothing reopened the store after close()"  # type: ignore[attr-defined]


@pytest.mark.asyncio
async def test_a_callers_own_cancel_of_get_result_stays_a_cancel(queue: TaskQueue) -> None:
    task_id = await queue.with_options(delay=3600).enqueue(tasks.add, 1, 2)
    waiter = asyncio.ensure_future(queue.get_result(task_id))
    await asyncio.sleep(0.05)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter


@pytest.mark.asyncio
async def test_closing_a_copy_leaves_the_originals_waiter_alone(queue: TaskQueue) -> None:
    import copy

    task_id = await queue.with_options(delay=3600).enqueue(tasks.add, 1, 2)
    waiter = asyncio.ensure_future(queue.get_result(task_id, timeout=0.3))
    await asyncio.sleep(0.05)
    await copy.copy(queue).close()
    assert await waiter is None, "the original's wait runs to its own timeout"


@pytest.mark.asyncio
async def test_close_ends_a_waiter_on_another_threads_loop(tmp_path: Path) -> None:
    queue = TaskQueue(SQLiteBackend(tmp_path / "threads.db"))
    await queue.connect()
    task_id = await queue.with_options(delay=3600).enqueue(tasks.add, 1, 2)
    entered, outcome = threading.Event(), []

    async def wait_there() -> None:
        waiting = asyncio.ensure_future(queue.get_result(task_id, timeout=30))
        await asyncio.sleep(0.05)
        entered.set()
        try:
            await waiting
        except TaskQueueError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=asyncio.run, args=(wait_there(),))
    thread.start()
    assert await asyncio.to_thread(entered.wait, 10)
    await queue.close()
    await asyncio.to_thread(thread.join, 10)
    assert not thread.is_alive() and len(outcome) == 1 and outcome[0].task_id == task_id, outcome


@pytest.mark.asyncio
async def test_two_closes_at_once_end_a_waiter_with_task_queue_error_without_stalling(tmp_path: Path) -> None:
    """Each close cancelled the waiter: two cancels read as the caller's own, and one close waited 1 s."""
    queue = TaskQueue(SQLiteBackend(tmp_path / "double.db"))
    await queue.connect()
    task_id = await queue.with_options(delay=3600).enqueue(tasks.add, 1, 2)
    waiter = asyncio.ensure_future(queue.get_result(task_id))
    await asyncio.sleep(0.05)
    loop = asyncio.get_running_loop()
    began = loop.time()
    await asyncio.gather(queue.close(), queue.close())
    assert loop.time() - began < 0.5, "neither close waits out the unwind timeout"
    assert isinstance(waiter.exception(), TaskQueueError) and not waiter.cancelled()


@pytest.mark.asyncio
async def test_a_close_cancelled_while_its_waiters_unwind_still_closes_the_backend(tmp_path: Path) -> None:
    queue = TaskQueue(f"sqlite:///{tmp_path / 'cancelled-close.db'}")
    await queue.connect()
    task_id = await queue.with_options(delay=3600).enqueue(tasks.add, 1, 2)
    waiter = asyncio.ensure_future(queue.get_result(task_id))
    await asyncio.sleep(0.05)
    closing = asyncio.ensure_future(queue.close())
    await asyncio.sleep(0)  # the close is inside: waiting for the waiter to unwind
    closing.cancel()
    await asyncio.gather(closing, waiter, return_exceptions=True)
    assert queue.backend._db is None, "the hold was let go and the backend closed"  # type: ignore[attr-defined]


@pytest.mark.asyncio
async def test_a_callers_own_cancel_on_another_loop_stays_a_cancel_when_a_close_comes_too(tmp_path: Path) -> None:
    """The close marked the other loop's waiter at once: the caller's pending cancel turned into TaskQueueError."""
    queue = TaskQueue(SQLiteBackend(tmp_path / "race.db"))
    await queue.connect()
    task_id = await queue.with_options(delay=3600).enqueue(tasks.add, 1, 2)
    ready, go, seen = threading.Event(), threading.Event(), []

    async def other_loop() -> None:
        waiter = asyncio.ensure_future(queue.get_result(task_id))
        await asyncio.sleep(0.05)

        def cancel_then_stay_busy() -> None:
            waiter.cancel()  # the caller's own cancel: pending until this loop turns again
            ready.set()
            go.wait(5)  # meanwhile the close on the other loop runs

        asyncio.get_running_loop().call_soon(cancel_then_stay_busy)
        try:
            await waiter
        except BaseException as exc:  # what ended it is the point
            seen.append(type(exc).__name__)

    thread = threading.Thread(target=asyncio.run, args=(other_loop(),))
    thread.start()
    assert await asyncio.to_thread(ready.wait, 5)
    closing = asyncio.ensure_future(queue.close())
    await asyncio.sleep(0.05)
    go.set()
    await closing
    await asyncio.to_thread(thread.join, 10)
    assert seen == ["CancelledError"], seen


@pytest.mark.asyncio
async def test_a_get_result_called_while_the_queue_closes_ends_and_does_not_reopen_the_store(tmp_path: Path) -> None:
    """It started after close() had ended the waiters, then reopened the store that nothing closed afterwards."""
    queue = TaskQueue(f"sqlite:///{tmp_path / 'closing.db'}")
    await queue.connect()
    task_id = await queue.enqueue(tasks.add, 1, 2)
    closing = asyncio.ensure_future(queue.close())
    await asyncio.sleep(0)  # the close is under way (closing the backend)
    with pytest.raises(TaskQueueError, match="while the queue was closing"):
        await queue.get_result(task_id, timeout=1)
    await closing
    assert queue.backend._db is None  # type: ignore[attr-defined]
    assert await queue.get_result(task_id, timeout=0) is None  # after close() a call reopens, as before
    await queue.close()


def _refused_naming(error: ValidationError, parameter: str, eta: datetime) -> None:
    assert error.parameter == parameter and error.value is eta, repr(error)
    assert isinstance(error.cause, RuntimeError | TypeError | ValueError) and error.cause is error.__cause__


@pytest.mark.asyncio
@pytest.mark.parametrize("zone", BROKEN_ZONES, ids=lambda zone: type(zone).__name__)
async def test_an_eta_whose_zone_cannot_give_its_offset_is_a_validation_error_naming_eta(
    queue: TaskQueue, zone: tzinfo
) -> None:
    """A tzinfo whose ``utcoffset`` raised let its own RuntimeError (TypeError, ValueError) out of enqueue."""
    eta = datetime(2030, 1, 1, tzinfo=zone)
    view = queue.with_options(priority=1)
    for call in (
        lambda: queue.with_options(eta=eta),
        lambda: view.with_options(eta=eta),
        lambda: sitq.TaskOptions(eta=eta).validated(),
        lambda: sitq.task(eta=eta),
        lambda: queue.task(eta=eta),
    ):
        with pytest.raises(ValidationError) as info:
            call()
        _refused_naming(info.value, "eta", eta)
    for awaited in (
        lambda: queue.enqueue(tasks.add, 1, eta=eta),
        lambda: view.enqueue(tasks.add, 1, eta=eta),
        lambda: queue.requeue("some-task", eta=eta),
        lambda: queue.backend.requeue("some-task", eta=eta),  # a backend's own check (checks.aware) too
    ):
        with pytest.raises(ValidationError) as info:
            await awaited()
        _refused_naming(info.value, "eta", eta)
    with pytest.raises(ValidationError) as info:
        await queue.purge(older_than=eta)
    _refused_naming(info.value, "older_than", eta)
    assert (await queue.counts())["queued"] == 0


def takes_a_timeout(timeout: float, *, priority: int = 0) -> float:
    """A task whose own parameters are named like task options: it gets them."""
    return timeout + priority


def takes_anything(**kwargs: Any) -> int:
    return len(kwargs)


class Mailer:
    def send(self, to: str) -> str:
        return to


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("name", "option"),
    [
        ("delay", "delay"),
        ("countdown", "delay"),  # Celery's word for it
        ("priority", "priority"),
        ("max_retries", "max_retries"),
        ("retry_backoff", "retry_backoff"),
        ("timeout", "timeout"),
        ("queue_name", "queue_name"),
        ("max_lease_expiries", "max_lease_expiries"),
    ],
)
async def test_a_task_option_given_to_enqueue_is_refused_when_the_function_cannot_take_it(
    queue: TaskQueue, name: str, option: str
) -> None:
    """enqueue(f, delay=5) passed delay to f: stored due now, the task failed in the worker on the keyword."""
    with pytest.raises(ValidationError) as info:
        await queue.enqueue(tasks.add, 1, **{name: 5})
    assert info.value.parameter == name
    assert f"queue.with_options({option}=...)" in str(info.value) and "sitq_test_tasks:add" in str(info.value)
    assert (await queue.counts())["queued"] == 0


@pytest.mark.asyncio
async def test_every_enqueue_path_refuses_a_task_option_the_function_cannot_take(
    queue: TaskQueue, tmp_path: Path
) -> None:
    view = queue.with_options(priority=3)
    decorated = queue.task(tasks.add)
    attempts: list[tuple[str, Any]] = [
        ("view.enqueue", lambda: view.enqueue(tasks.add, 1, delay=5)),
        ("enqueue_call", lambda: queue.enqueue_call(tasks.add, (1,), {"delay": 5})),
        ("enqueue_many", lambda: queue.enqueue_many([(tasks.add, (1,)), (tasks.add, (1,), {"delay": 5})])),
        ("view.enqueue_many", lambda: view.enqueue_many([Call(tasks.add, (1,), {"countdown": 5})])),
        ("a decorated task's enqueue", lambda: decorated.enqueue(1, delay=5)),  # type: ignore[call-arg]
        ("a method", lambda: queue.enqueue(Mailer().send, "a@b", priority=1)),
    ]
    for what, attempt in attempts:
        with pytest.raises(ValidationError) as info:
            await attempt()
        assert info.value.parameter in ("delay", "countdown", "priority"), what
        assert "queue.with_options(" in str(info.value), what
    with pytest.raises(ValidationError) as many:
        await queue.enqueue_many([(tasks.add, (1,)), (tasks.add, (1,), {"delay": 5})])
    assert "calls[1]" in str(many.value)

    def sync_side() -> None:
        with SyncTaskQueue(queue.backend) as sync_queue:
            for attempt in (
                lambda: sync_queue.enqueue(tasks.add, 1, delay=5),
                lambda: sync_queue.with_options(priority=1).enqueue(tasks.add, 1, delay=5),
                lambda: sync_queue.enqueue_many([(tasks.add, (1,), {"delay": 5})]),
            ):
                with pytest.raises(ValidationError) as info:
                    attempt()
                assert info.value.parameter == "delay"

    await asyncio.to_thread(sync_side)
    assert (await queue.counts())["queued"] == 0


@pytest.mark.asyncio
async def test_keywords_named_like_options_reach_functions_that_take_them(queue: TaskQueue) -> None:
    """Only a function that cannot take the keyword is refused (any keyword: see test_unknown_keywords.py)."""
    stored = [
        await queue.enqueue(takes_a_timeout, timeout=1.5, priority=2),
        await queue.enqueue(takes_anything, delay=5, countdown=1),
        await queue.enqueue_call(tasks.decorated_async, (1,), {"eta": "passed on"}),
        await queue.enqueue(tasks.add, 1, b=2),
        await queue.enqueue(dict, delay=5),  # no signature to read: not checked
    ]
    assert len(set(stored)) == 5 and (await queue.counts())["queued"] == 5
    task = await queue.get_task(stored[0])
    assert task is not None and task.priority == 0  # the function's argument, not the task option
    _func, _args, kwargs = queue.serializer.loads_call(task.payload)
    assert kwargs == {"timeout": 1.5, "priority": 2}


def consumes_a_timeout(func: Any) -> Any:
    """A decorator whose wrapper takes ``timeout=`` itself (a deadline it enforces) and passes the rest on."""

    @functools.wraps(func)
    def wrapper(*args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        return func(*args, **kwargs)

    return wrapper


def passes_everything_on(func: Any) -> Any:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return func(*args, **kwargs)

    return wrapper


def positional_only(func: Any) -> Any:
    @functools.wraps(func)
    def wrapper(*args: Any) -> Any:
        return func(*args)

    return wrapper


@consumes_a_timeout
def fetch(url: str) -> str:
    return url


@passes_everything_on
def fetch_anything(url: str) -> str:
    return url


@positional_only
def fetch_positionally(url: str, timeout: float = 1.0) -> str:
    return url


@functools.lru_cache
def cached_square(x: int) -> int:
    return x * x


class Prioritised:
    def __call__(self, *, priority: int = 0) -> int:
        return priority


class Plain:
    def __call__(self, x: int) -> int:
        return x


class TakesATimeout:
    def __init__(self, timeout: float) -> None:
        self.timeout = timeout


@pytest.mark.asyncio
async def test_the_callable_enqueued_decides_which_option_keywords_it_takes_not_the_function_it_wraps(
    queue: TaskQueue,
) -> None:
    """A functools.wraps wrapper that takes timeout= itself, around a function that does not, was refused
    ("fetch takes no argument 'timeout'"): the check read the wrapped function's signature, though calling the
    wrapper works. What enqueue stores is a call of the callable given, so its own parameters decide."""
    taken = [
        ("a wrapper taking the keyword", fetch, ("u",), {"timeout": 3}),
        ("a wrapper with **kwargs", fetch_anything, ("u",), {"timeout": 3}),
        ("a callable instance", Prioritised(), (), {"priority": 2}),
        ("a bound method", Prioritised().__call__, (), {"priority": 1}),
        ("a partial", functools.partial(takes_anything, a=1), (), {"delay": 1}),
        ("a class", TakesATimeout, (), {"timeout": 2}),
    ]
    for what, func, args, kwargs in taken:
        task_id = await queue.enqueue(func, *args, **kwargs)
        task = await queue.get_task(task_id)
        assert task is not None, what
        assert queue.serializer.loads_call(task.payload)[2] == kwargs, what
    assert fetch("u", timeout=3) == "u"  # as the worker will call it
    refused = [
        ("a wrapper without the keyword", fetch_positionally, ("u",), {"timeout": 3}),
        ("a callable instance", Plain(), (1,), {"priority": 2}),
        ("a bound method", Plain().__call__, (1,), {"priority": 2}),
        ("a partial", functools.partial(tasks.add, 1), (), {"delay": 1}),
        ("a class", TakesATimeout, (1,), {"priority": 2}),
        ("an lru_cache wrapper (no signature of its own)", cached_square, (2,), {"delay": 1}),
    ]
    for what, func, args, kwargs in refused:
        with pytest.raises(ValidationError) as info:
            await queue.enqueue(func, *args, **kwargs)
        assert info.value.parameter == next(iter(kwargs)), what
    assert (await queue.counts())["queued"] == len(taken)


@pytest.mark.asyncio
async def test_purge_takes_a_timedelta_as_finished_longer_ago_than_that(queue: TaskQueue) -> None:
    """purge(older_than=timedelta(hours=1)) was refused ('must be a timezone-aware datetime'), a natural first try."""
    done = await queue.enqueue(tasks.add, 1)
    worker = Worker(queue.backend)
    await worker.start()
    assert await queue.get_result(done, timeout=10) is not None
    await worker.stop()
    queued = await queue.enqueue(tasks.add, 2)
    assert await queue.purge(older_than=timedelta(hours=1)) == 0  # finished just now: kept
    assert await queue.purge(older_than=timedelta.max) == 0  # longer ago than year 1: nothing
    for bad, said in ((timedelta(seconds=-1), "timedelta >= 0"), (3600, "got int"), ("1h", "got str")):
        with pytest.raises(ValidationError) as info:
            await queue.purge(older_than=bad)  # type: ignore[arg-type]
        assert info.value.parameter == "older_than" and said in str(info.value)
    assert await queue.purge(older_than=timedelta(0)) == 1  # finished before now
    assert await queue.get_task(done) is None and await queue.get_task(queued) is not None


@pytest.mark.asyncio
@pytest.mark.parametrize("unlimited", [math.inf, 2**1100, Decimal("Infinity")], ids=["inf", "2**1100", "Decimal"])
async def test_timeout_inf_means_no_limit_and_lifts_a_decorated_tasks_timeout(queue: TaskQueue, unlimited: Any) -> None:
    """with_options(timeout=None) leaves an option as it is, and inf was refused ('use None for no time limit'):
    no way was left to lift a decorator's timeout for one enqueue."""
    limited = sitq.task(timeout=0.2)(tasks.add)
    view = queue.with_options(timeout=unlimited)
    assert view.options.timeout is None and "timeout" in view.options.explicit_names()
    task = await queue.get_task(await view.enqueue(limited, 1, b=2))
    assert task is not None and task.timeout is None
    kept = await queue.get_task(await queue.with_options(timeout=None).enqueue(limited, 1, b=2))
    assert kept is not None and kept.timeout == 0.2  # None still leaves it as it is
    assert sitq.task(timeout=unlimited)(tasks.add).options.timeout is None


class _Proxy:
    """A lazy proxy: every attribute it lacks is looked up on a remote service, which raises its own error."""

    def __call__(self, x: int) -> int:
        return x * 2

    def __getattr__(self, name: str) -> Any:
        raise LookupError(f"remote has no {name}")


@pytest.mark.asyncio
async def test_a_callable_object_whose_attribute_lookups_raise_is_stored_and_named_by_its_class(
    queue: TaskQueue,
) -> None:
    """Naming it (``__qualname__``) raised the proxy's LookupError out of enqueue; cloudpickle stores it fine."""
    task_id = await queue.enqueue(_Proxy(), 21)
    task = await queue.get_task(task_id)
    assert task is not None and task.function_name.endswith(":_Proxy")
