"""BadInputContract: unknown ids are not errors; bad arguments name the parameter; nothing is lost."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, cast

import pytest

from ...backend import Backend
from ...errors import ValidationError
from ...models import LeaseState, Outcome, TaskStatus
from ..answers import WrongAnswer
from ..clock import FakeClock
from ..fixtures import BackendFixtures
from ._support import (
    LEASE,
    WORKER,
    get,
    make_task,
    parameter_of,
    rejected,
    reserve_all,
    reserve_one,
    stored_hint,
    within,
)

C = "BadInputContract"


async def answer(awaitable: Awaitable[object], call: str) -> object:
    """What ``call`` returns; an exception fails naming the contract (an unknown id is not an error)."""
    try:
        return await within(awaitable, C, f"{call} must answer")
    except Exception as error:
        pytest.fail(f"{C}: {call} must answer (None, False or LOST), not raise {type(error).__name__}: {error}")


class BadInputContract(BackendFixtures):
    """The shared rules: unknown ids read None / change False; ValidationError names the parameter."""

    @pytest.mark.asyncio
    async def test_unknown_ids(self, backend: Backend) -> None:
        answers: dict[str, tuple[Callable[[], Awaitable[object]], object]] = {
            "get_task": (lambda: backend.get_task("nope"), None),
            "get_result": (lambda: backend.get_result("nope"), None),
            "wait_for_result(timeout=0)": (lambda: backend.wait_for_result("nope", 0), None),
            "cancel": (lambda: backend.cancel("nope"), False),
            "requeue": (lambda: backend.requeue("nope"), False),
            "requeue_many": (lambda: backend.requeue_many(["nope"]), [False]),
            "heartbeat": (lambda: backend.heartbeat([("nope", "token")], LEASE), {"nope": LeaseState.LOST}),
            "finish_many": (lambda: backend.finish_many([Outcome("nope", "token", "success", value=b"")]), [False]),
        }
        for call, (make, wanted) in answers.items():
            got = await answer(make(), f"{call} of an unknown id")
            assert got == wanted, f"{C}: {call} of an unknown id must return {wanted!r}, got {got!r}"

    @pytest.mark.asyncio
    async def test_bad_arguments_lose_nothing(self, backend: Backend, clock: FakeClock) -> None:
        task = make_task(clock)
        await backend.enqueue(task)
        calls: dict[str, Callable[[], Awaitable[object]]] = {
            "limit": lambda: backend.reserve(worker_id=WORKER, limit=0, lease_seconds=LEASE),
            "lease_seconds": lambda: backend.reserve(worker_id=WORKER, limit=1, lease_seconds=0),
            "status": lambda: backend.list_tasks(status="nope"),
            "older_than": lambda: backend.purge(older_than=datetime(2000, 1, 1)),
            "tasks": lambda: backend.enqueue_many([task]),
            "eta": lambda: backend.requeue(task.id, eta=datetime(2000, 1, 1)),
            "queues": lambda: backend.reserve(worker_id=WORKER, limit=1, lease_seconds=LEASE, queues="default"),
        }
        wrong = {
            "limit": "limit=0",
            "lease_seconds": "lease_seconds=0",
            "status": "an unknown status",
            "older_than": "a naive datetime",
            "tasks": "a task id that already exists",
            "eta": "requeue(eta=<a naive datetime>)",
            "queues": "queues='default' (a string, not a list of names)",
        }
        for parameter, call in calls.items():
            try:
                await call()
            except ValidationError as error:
                assert parameter_of(error) == parameter, (
                    f"{C}: {wrong[parameter]} must raise ValidationError(parameter={parameter!r}), "
                    f"got parameter={parameter_of(error)!r}: {error}"
                )
            except WrongAnswer:  # an answer of the wrong type, where none was due: the promise is what broke
                pytest.fail(
                    f"{C}: {wrong[parameter]} must raise ValidationError(parameter={parameter!r}); nothing raised"
                )
            except Exception as error:
                pytest.fail(
                    f"{C}: {wrong[parameter]} must raise ValidationError(parameter={parameter!r}); "
                    f"it raised {type(error).__name__}: {error}"
                )
            else:
                pytest.fail(
                    f"{C}: {wrong[parameter]} must raise ValidationError(parameter={parameter!r}); nothing raised"
                )
        stored = await get(backend, task.id, C)
        assert stored == task, f"{C}: rejected calls changed a stored task:\n  {task}\n  {stored}"
        assert stored.status == TaskStatus.QUEUED, f"{C}: rejected calls must leave a stored task queued"

    @pytest.mark.asyncio
    async def test_bad_leases_and_outcomes_change_nothing(self, backend: Backend, clock: FakeClock) -> None:
        """heartbeat and finish_many check their arguments before touching a lease (``sitq_core.checks``)."""
        first, second = make_task(clock, priority=1), make_task(clock)
        await backend.enqueue_many([first, second])
        lease = await reserve_one(backend, C)
        # whichever reserve took (the priority order is ReserveContract's to check)
        held, waiting = (first, second) if lease.id == first.id else (second, first)
        pair = (lease.id, lease.lease_token)
        naive = datetime(2030, 1, 1)

        def outcome(kind: str, **fields: Any) -> Outcome:
            return Outcome(lease.id, lease.lease_token, cast(Any, kind), **fields)

        calls: list[tuple[str, str, Callable[[], Awaitable[object]]]] = [
            ("heartbeat(lease_seconds=0)", "lease_seconds", lambda: backend.heartbeat([pair], 0)),
            ("heartbeat(lease_seconds=-1)", "lease_seconds", lambda: backend.heartbeat([pair], -1)),
            ("heartbeat(lease_seconds=nan)", "lease_seconds", lambda: backend.heartbeat([pair], float("nan"))),
            ("heartbeat(leases='ab') (a string)", "leases", lambda: backend.heartbeat(cast(Any, "ab"), LEASE)),
            (
                "heartbeat(leases=[(task_id,)]) (not a pair)",
                "leases",
                lambda: backend.heartbeat(cast(Any, [pair[:1]]), LEASE),
            ),
            (
                "finish_many with an outcome of kind 'bogus'",
                "outcomes",
                lambda: backend.finish_many([outcome("bogus")]),
            ),
            (
                "finish_many with a retry whose retry_at is naive",
                "outcomes",
                lambda: backend.finish_many([outcome("retry", error="boom", retry_at=naive)]),
            ),
            (
                "finish_many with a success whose finished_at is naive",
                "outcomes",
                lambda: backend.finish_many([outcome("success", value=b"", finished_at=naive)]),
            ),
            (
                "finish_many(<an Outcome, not a list of them>)",
                "outcomes",
                lambda: backend.finish_many(cast(Any, outcome("success", value=b""))),
            ),
        ]
        for call, parameter, make in calls:
            await rejected(make(), C, call, parameter)
        stored = await get(backend, held.id, C)
        assert (stored.status, stored.attempts) == (TaskStatus.RUNNING, 1), (
            f"{C}: rejected heartbeat/finish_many calls changed a running task: {stored.status!r}, "
            f"attempts={stored.attempts}"
        )
        states = await backend.heartbeat([pair], LEASE)
        assert states == {lease.id: LeaseState.HELD}, (
            f"{C}: after rejected calls the lease must still be held, got {states}"
        )
        others = await reserve_all(backend)
        if [r.id for r in others] != [waiting.id]:
            pytest.fail(
                f"{C}: after rejected calls the other queued task must still be reservable, got "
                f"{[r.id for r in others]}{await stored_hint(backend, [held, waiting])}"
            )
        assert await backend.finish_many([outcome("success", value=b"v")]) == [True], (
            f"{C}: after rejected calls the worker's own outcome must still be accepted"
        )

    @pytest.mark.asyncio
    async def test_requeue_many_checks_every_argument_first(self, backend: Backend, clock: FakeClock) -> None:
        """A bad id anywhere in the list, or a naive eta, is refused before the first id is requeued."""
        await backend.enqueue(make_task(clock))
        lease = await reserve_one(backend, C)
        await backend.fail(lease, "boom")
        calls: list[tuple[str, str, Callable[[], Awaitable[object]]]] = [
            ("requeue_many([failed id, ''])", "task_ids", lambda: backend.requeue_many([lease.id, ""])),
            ("requeue_many([failed id, 'a\\x00b'])", "task_ids", lambda: backend.requeue_many([lease.id, "a\x00b"])),
            ("requeue_many([failed id, 7])", "task_ids", lambda: backend.requeue_many(cast(Any, [lease.id, 7]))),
            ("requeue_many(<one id, not a list of them>)", "task_ids", lambda: backend.requeue_many(lease.id)),
            (
                "requeue_many([failed id], eta=<a naive datetime>)",
                "eta",
                lambda: backend.requeue_many([lease.id], eta=datetime(2000, 1, 1)),
            ),
        ]
        for call, parameter, make in calls:
            await rejected(make(), C, call, parameter)
        stored = await get(backend, lease.id, C)
        assert stored.status == TaskStatus.FAILED, (
            f"{C}: a refused requeue_many call requeued a task of its list (status {stored.status!r}): every "
            "argument must be checked before the first id is requeued"
        )

    @pytest.mark.asyncio
    async def test_an_empty_queue_list_reserves_nothing(self, backend: Backend, clock: FakeClock) -> None:
        await backend.enqueue(make_task(clock))
        got = await backend.reserve(worker_id=WORKER, limit=1, lease_seconds=LEASE, queues=[])
        assert got == [], f"{C}: reserve(queues=[]) must reserve nothing (None means every queue), got {len(got)}"

    @pytest.mark.asyncio
    async def test_empty_heartbeat_and_finish(self, backend: Backend) -> None:
        assert await backend.heartbeat([], LEASE) == {}, f"{C}: heartbeat([]) must return {{}}"
        assert await backend.finish_many([]) == [], f"{C}: finish_many([]) must return []"
