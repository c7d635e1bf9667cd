"""BadInputContract: unknown ids are not errors; bad arguments name the parameter; nothing is lost."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime

import pytest

from ...backend import Backend
from ...errors import ValidationError
from ...models import LeaseState, Outcome, TaskStatus
from ..clock import FakeClock
from ..fixtures import BackendFixtures
from ._support import LEASE, WORKER, get, make_task, parameter_of

C = "BadInputContract"


class BadInputContract(BackendFixtures):
    """The shared rules: unknown ids read None / change False; ValidationError names the parameter."""

    @pytest.mark.asyncio
    async def test_unknown_ids(self, backend: Backend) -> None:
        assert await backend.get_task("nope") is None, f"{C}: get_task(unknown) must return None"
        assert await backend.get_result("nope") is None, f"{C}: get_result(unknown) must return None"
        assert await backend.wait_for_result("nope", 0) is None, f"{C}: wait_for_result(unknown, 0) must be None"
        assert await backend.cancel("nope") is False, f"{C}: cancel(unknown) must return False"
        assert await backend.requeue("nope") is False, f"{C}: requeue(unknown) must return False"
        states = await backend.heartbeat([("nope", "token")], LEASE)
        assert states == {"nope": LeaseState.LOST}, f"{C}: heartbeat(unknown) must return LOST, got {states}"
        accepted = await backend.finish_many([Outcome("nope", "token", "success", value=b"")])
        assert accepted == [False], f"{C}: finish_many(unknown) must return [False], got {accepted}"

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
    async def test_an_empty_queue_list_reserves_nothing(self, backend: Backend, clock: FakeClock) -> None:
        await backend.enqueue(make_task(clock))
        got = await backend.reserve(worker_id=WORKER, limit=1, lease_seconds=LEASE, queues=[])
        assert got == [], f"{C}: reserve(queues=[]) must reserve nothing (None means every queue), got {len(got)}"

    @pytest.mark.asyncio
    async def test_empty_heartbeat_and_finish(self, backend: Backend) -> None:
        assert await backend.heartbeat([], LEASE) == {}, f"{C}: heartbeat([]) must return {{}}"
        assert await backend.finish_many([]) == [], f"{C}: finish_many([]) must return []"
