"""EnqueueContract: enqueue one/many, atomic batches, every field round trips."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from datetime import timedelta, timezone
from typing import Any

import pytest

from ...backend import Backend, Capability
from ...batch import TaskBatch
from ...errors import SerializationError, ValidationError
from ...models import Task, TaskStatus
from ..clock import FakeClock
from ..fixtures import BackendFixtures, requires
from ._support import get, is_aware_utc, make_task, parameter_of, refused, rejected, reserve_all

C = "EnqueueContract"


def full_task(clock: FakeClock) -> Task:
    """A task with every field set to a non-default value."""
    return make_task(
        clock,
        payload=bytes(range(256)) * 4,  # NUL bytes and non-UTF-8
        serializer="msgpack",
        function_name="app.tasks:send_email",
        queue="emails",
        priority=-7,
        eta=clock.now() + timedelta(seconds=90, microseconds=654321),
        max_retries=4,
        retry_backoff=2.5,
        timeout=12.25,
        max_lease_expiries=7,
        enqueued_at=clock.now() - timedelta(microseconds=1),
    )


#: Tasks ``enqueue_many`` must refuse with ``ValidationError(parameter="tasks")``: flaw -> fields.
INVALID: dict[str, Callable[[FakeClock], dict[str, Any]]] = {
    "eta is naive": lambda clock: {"eta": clock.now().replace(tzinfo=None)},
    "enqueued_at is naive": lambda clock: {"enqueued_at": clock.now().replace(tzinfo=None)},
    "payload is str, not bytes": lambda clock: {"payload": "text, not bytes"},
}


class EnqueueContract(BackendFixtures):
    """Backend.enqueue / enqueue_many / get_task."""

    @pytest.mark.asyncio
    async def test_enqueue_returns_id(self, backend: Backend, clock: FakeClock) -> None:
        task = make_task(clock)
        task_id = await backend.enqueue(task)
        assert task_id == task.id, f"{C}: enqueue must return the task's own id, got {task_id!r}"
        stored = await get(backend, task.id, C)
        assert stored.status == TaskStatus.QUEUED, f"{C}: an enqueued task must be 'queued', got {stored.status!r}"

    @pytest.mark.asyncio
    async def test_enqueue_many_returns_ids_in_order(self, backend: Backend, clock: FakeClock) -> None:
        tasks = [make_task(clock) for _ in range(5)]
        tasks = [tasks[i] for i in (3, 0, 4, 1, 2)]  # not in id order: the input order is what counts
        ids = await backend.enqueue_many(tasks)
        assert ids == [t.id for t in tasks], (
            f"{C}: enqueue_many must return the ids in input order (not sorted), got {ids}"
        )
        for task in tasks:
            await get(backend, task.id, C)

    @pytest.mark.asyncio
    async def test_enqueue_many_empty(self, backend: Backend) -> None:
        assert await backend.enqueue_many([]) == [], f"{C}: enqueue_many([]) must return []"

    @pytest.mark.asyncio
    async def test_every_field_round_trips(self, backend: Backend, clock: FakeClock) -> None:
        task = full_task(clock)
        await backend.enqueue(task)
        stored = await get(backend, task.id, C)
        for name in Task.__dataclass_fields__:
            assert getattr(stored, name) == getattr(task, name), (
                f"{C}: Task.{name} did not round trip: stored {getattr(task, name)!r}, "
                f"got back {getattr(stored, name)!r}"
            )
        assert isinstance(stored.status, TaskStatus), f"{C}: Task.status must be a TaskStatus"
        assert isinstance(stored.payload, bytes), f"{C}: Task.payload must come back as bytes"

    @pytest.mark.asyncio
    async def test_enqueue_blocking_stores_like_enqueue_or_declines(self, backend: Backend, clock: FakeClock) -> None:
        await backend.connect()
        task = full_task(clock)
        task_id = await asyncio.to_thread(backend.enqueue_blocking, task)  # a plain thread, as SyncTaskQueue calls it
        if task_id is None:
            assert await backend.get_task(task.id) is None, (
                f"{C}: enqueue_blocking returned None (declined) but stored the task"
            )
            return
        assert task_id == task.id, f"{C}: enqueue_blocking must return the task's own id, got {task_id!r}"
        stored = await backend.get_task(task.id)
        assert stored is not None, f"{C}: enqueue_blocking returned the id but get_task finds no task"
        for name in Task.__dataclass_fields__:
            assert getattr(stored, name) == getattr(task, name), (
                f"{C}: Task.{name} did not round trip through enqueue_blocking: stored "
                f"{getattr(task, name)!r}, got back {getattr(stored, name)!r}"
            )
        try:
            again = await asyncio.to_thread(backend.enqueue_blocking, task)
        except ValidationError as exc:
            assert parameter_of(exc) == "tasks", f"{C}: an existing id must raise ValidationError(parameter='tasks')"
        else:
            assert again is None, f"{C}: enqueue_blocking of an existing id must raise ValidationError or return None"

    @pytest.mark.asyncio
    async def test_enqueue_blocking_stores_a_moved_task_as_enqueue_does(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        await backend.connect()
        east = timezone(timedelta(hours=5, minutes=30))
        moved = make_task(clock, status=TaskStatus.RUNNING, attempts=1, eta=clock.now().astimezone(east))
        task_id = await asyncio.to_thread(backend.enqueue_blocking, moved)
        if task_id is None:
            return  # declined: the caller enqueues it the usual way
        stored = await get(backend, moved.id, C)
        assert stored.status == TaskStatus.QUEUED, (
            f"{C}: enqueue_blocking must store a task exactly as enqueue would: queued, got {stored.status!r}"
        )
        assert is_aware_utc(stored.eta) and stored.eta == moved.eta, (
            f"{C}: enqueue_blocking must store a task exactly as enqueue would: eta in aware UTC, got {stored.eta!r}"
        )

    @pytest.mark.asyncio
    async def test_default_task_round_trips(self, backend: Backend, clock: FakeClock) -> None:
        task = make_task(clock)  # timeout=None and other defaults
        await backend.enqueue(task)
        stored = await get(backend, task.id, C)
        assert stored == task, f"{C}: a default Task did not round trip:\n  sent {task!r}\n  got  {stored!r}"

    @pytest.mark.asyncio
    async def test_times_are_aware_utc(self, backend: Backend, clock: FakeClock) -> None:
        task = full_task(clock)
        await backend.enqueue(task)
        stored = await get(backend, task.id, C)
        for name in ("eta", "enqueued_at"):
            assert is_aware_utc(getattr(stored, name)), (
                f"{C}: Task.{name} must come back timezone-aware UTC, got {getattr(stored, name)!r}"
            )

    @pytest.mark.asyncio
    async def test_times_in_another_zone_come_back_as_utc(self, backend: Backend, clock: FakeClock) -> None:
        east = timezone(timedelta(hours=5, minutes=30))
        task = make_task(clock, eta=(clock.now() + timedelta(hours=1)).astimezone(east))
        task = task.with_changes(enqueued_at=clock.now().astimezone(east))
        await backend.enqueue(task)
        stored = await get(backend, task.id, C)
        for name in ("eta", "enqueued_at"):
            value = getattr(stored, name)
            assert is_aware_utc(value), f"{C}: Task.{name} must come back as aware UTC, got {value!r}"
            assert value == getattr(task, name), f"{C}: Task.{name} must keep its instant, got {value!r}"

    @pytest.mark.asyncio
    async def test_a_task_with_history_is_stored_queued_with_its_counters(
        self, backend: Backend, clock: FakeClock
    ) -> None:
        # a task moved from another store: whatever its status says, it is stored ready to reserve,
        # and its counters (its history) are kept
        moved = make_task(clock, status=TaskStatus.RUNNING, attempts=2, lease_expiries=1, worker_id="elsewhere")
        await backend.enqueue(moved)
        stored = await get(backend, moved.id, C)
        assert stored.status == TaskStatus.QUEUED, (
            f"{C}: enqueue stores every task as queued (ready at its eta), got {stored.status!r}"
        )
        assert (stored.attempts, stored.lease_expiries) == (2, 1), (
            f"{C}: enqueue must keep a task's attempts and lease_expiries, got "
            f"{stored.attempts} and {stored.lease_expiries}"
        )
        got = await reserve_all(backend)
        assert [lease.id for lease in got] == [moved.id], f"{C}: a task enqueued with history must be reservable"
        assert got[0].task.attempts == 3, f"{C}: reserve must count on from the stored attempts (2 + 1)"

    @pytest.mark.asyncio
    async def test_duplicate_id_stores_nothing(self, backend: Backend, clock: FakeClock) -> None:
        existing = make_task(clock, payload=b"original")
        await backend.enqueue(existing)
        fresh = [make_task(clock) for _ in range(3)]
        clash = make_task(clock, id=existing.id, payload=b"impostor")
        error = await refused(
            backend.enqueue_many([fresh[0], clash, *fresh[1:]]),
            ValidationError,
            C,
            "enqueue_many with an id already stored must raise ValidationError(parameter='tasks')",
        )
        assert parameter_of(error) == "tasks", (
            f"{C}: a duplicate id must raise ValidationError(parameter='tasks'), got {parameter_of(error)!r}"
        )
        for task in fresh:
            assert await backend.get_task(task.id) is None, (
                f"{C}: enqueue_many is not atomic: a batch with a duplicate id stored task {task.id}"
            )
        stored = await get(backend, existing.id, C)
        assert stored.payload == b"original", f"{C}: a duplicate id overwrote the stored task"

    @pytest.mark.parametrize("flaw", sorted(INVALID))
    @pytest.mark.asyncio
    async def test_an_invalid_task_stores_nothing_of_its_batch(
        self, backend: Backend, clock: FakeClock, flaw: str
    ) -> None:
        good = [make_task(clock) for _ in range(4)]
        bad = make_task(clock, **INVALID[flaw](clock))  # Task itself checks nothing: the backend must
        await rejected(
            backend.enqueue_many([*good[:2], bad, *good[2:]]),
            C,
            f"enqueue_many with a task whose {flaw} in the middle of the batch",
            "tasks",
        )
        for task in [*good, bad]:
            assert await backend.get_task(task.id) is None, (
                f"{C}: enqueue_many is not atomic: a batch holding a task whose {flaw} stored task {task.id} "
                "(every task must be checked before any is stored)"
            )
        assert await reserve_all(backend) == [], f"{C}: a rejected batch left a task to reserve"

    @pytest.mark.asyncio
    async def test_duplicate_id_within_batch(self, backend: Backend, clock: FakeClock) -> None:
        first = make_task(clock)
        other = make_task(clock)
        await refused(
            backend.enqueue_many([first, other, first.with_changes(payload=b"again")]),
            ValidationError,
            C,
            "enqueue_many with one id twice in the batch must raise ValidationError",
        )
        assert await backend.get_task(first.id) is None and await backend.get_task(other.id) is None, (
            f"{C}: enqueue_many is not atomic: a batch repeating an id stored part of the batch"
        )

    @requires(Capability.STREAMED_BATCHES)
    @pytest.mark.asyncio
    async def test_streamed_batch_is_stored_in_order(self, backend: Backend, clock: FakeClock) -> None:
        tasks = [make_task(clock, payload=bytes([n % 256])) for n in range(300)]
        ids = await backend.enqueue_many(TaskBatch(iter(tasks), len(tasks)))
        assert ids == [task.id for task in tasks], f"{C}: a streamed batch must return its ids in order"
        for task in (tasks[0], tasks[150], tasks[-1]):
            assert (await get(backend, task.id, C)).payload == task.payload, f"{C}: a streamed task was not stored"

    @requires(Capability.STREAMED_BATCHES)
    @pytest.mark.asyncio
    async def test_streamed_batch_failing_midway_stores_nothing(self, backend: Backend, clock: FakeClock) -> None:
        good = [make_task(clock) for _ in range(250)]
        failure = SerializationError("cannot serialise item 250", operation="dumps")

        def source() -> Iterator[Task]:
            yield from good
            raise failure

        raised: SerializationError | None = None
        try:
            await backend.enqueue_many(TaskBatch(source(), 300))
        except SerializationError as exc:
            raised = exc
        assert raised is failure, (
            f"{C}: the error raised while reading a streamed batch must propagate from enqueue_many unchanged; "
            f"got {'nothing (it was swallowed)' if raised is None else repr(raised)}"
        )
        for task in (good[0], good[-1]):
            assert await backend.get_task(task.id) is None, (
                f"{C}: a streamed batch that failed while being read stored task {task.id}"
            )

    @pytest.mark.asyncio
    async def test_enqueue_one_duplicate(self, backend: Backend, clock: FakeClock) -> None:
        task = make_task(clock)
        await backend.enqueue(task)
        await refused(
            backend.enqueue(task.with_changes(payload=b"second")),
            ValidationError,
            C,
            "enqueue of an id already stored must raise ValidationError",
        )
        assert (await get(backend, task.id, C)).payload == task.payload, (
            f"{C}: enqueue of an existing id overwrote the stored task"
        )

    @pytest.mark.asyncio
    async def test_unknown_id_reads_none(self, backend: Backend) -> None:
        assert await backend.get_task("no-such-task") is None, f"{C}: get_task of an unknown id must return None"

    @pytest.mark.asyncio
    async def test_large_payload(self, backend: Backend, clock: FakeClock) -> None:
        payload = bytes(range(256)) * 2048  # 512 KiB
        task = make_task(clock, payload=payload)
        await backend.enqueue(task)
        assert (await get(backend, task.id, C)).payload == payload, f"{C}: a 512 KiB payload did not round trip"
