"""``sitq requeue`` asks the store once per page of ids (``TaskQueue.requeue_many``), with the same output as before.

Real SQLite files; the spies below only count (or act like another process between two pages).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from sitq import SQLiteBackend, TaskQueue
from sitq_core import cli_tasks
from sitq_core.models import Outcome

from sitq_test_helpers import run_sitq as sitq
from sitq_test_tasks import add, boom


@pytest.fixture(autouse=True)
def _no_backend_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SITQ_BACKEND", raising=False)


async def fail_due(backend: Any, ids: Sequence[str]) -> None:
    """Run the due tasks ``ids`` (the only due ones) to a failure, as a worker would."""
    leases = await backend.reserve(worker_id="test", limit=max(1, len(ids)), lease_seconds=60)
    assert sorted(lease.id for lease in leases) == sorted(ids)
    assert all(await backend.finish_many([Outcome(x.id, x.lease_token, "failed", error="again") for x in leases]))


def failed_store(path: Path, count: int) -> list[str]:
    async def go() -> list[str]:
        async with TaskQueue(SQLiteBackend(path)) as queue:
            ids = await queue.enqueue_many([boom] * count)
            await fail_due(queue.backend, ids)
            return ids

    return asyncio.run(go())


def statuses(path: Path) -> dict[str, str]:
    async def go() -> dict[str, str]:
        async with SQLiteBackend(path) as backend:
            return {task.id: str(task.status) for task in await backend.list_tasks(limit=1000)}

    return asyncio.run(go())


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The id lists ``TaskQueue.requeue_many`` is called with; ``TaskQueue.requeue`` must not be called at all."""
    seen: list[list[str]] = []
    real = TaskQueue.requeue_many

    async def counted(self: TaskQueue, task_ids: Sequence[str], *, eta: datetime | None = None) -> list[bool]:
        seen.append(list(task_ids))
        return await real(self, task_ids, eta=eta)

    async def one_by_one(self: TaskQueue, task_id: str, *, eta: datetime | None = None) -> bool:
        raise AssertionError("sitq requeue requeued one task per store call")

    monkeypatch.setattr(TaskQueue, "requeue_many", counted)
    monkeypatch.setattr(TaskQueue, "requeue", one_by_one)
    monkeypatch.setattr(cli_tasks, "PAGE", 3)
    monkeypatch.setattr(cli_tasks, "READ_PAGE", 3)
    return seen


def test_requeue_failed_asks_the_store_once_per_page(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, calls: list[list[str]]
) -> None:
    path = tmp_path / "tasks.db"
    ids = failed_store(path, 8)
    assert sitq(capsys, "requeue", "--failed", "-b", f"sqlite:///{path}") == (0, "requeued 8 tasks\n", "")
    assert [len(page) for page in calls] == [3, 3, 2]
    assert sorted(task_id for page in calls for task_id in page) == sorted(ids)
    assert set(statuses(path).values()) == {"queued"}


@pytest.mark.parametrize("read_page", [3, 5], ids=["read-as-requeued", "read-more-than-requeued-per-call"])
def test_requeue_failed_never_requeues_a_task_twice_when_it_fails_again_meanwhile(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    calls: list[list[str]],
    monkeypatch: pytest.MonkeyPatch,
    read_page: int,
) -> None:
    """Each page requeued fails again at once (a worker elsewhere): the command still ends, each task once."""
    monkeypatch.setattr(cli_tasks, "READ_PAGE", read_page)
    path = tmp_path / "tasks.db"
    ids = failed_store(path, 7)
    counted = TaskQueue.requeue_many

    async def and_fail_again(self: TaskQueue, task_ids: Sequence[str], *, eta: datetime | None = None) -> list[bool]:
        answers = await counted(self, task_ids, eta=eta)
        await fail_due(self.backend, [task_id for task_id, ok in zip(task_ids, answers, strict=True) if ok])
        return answers

    monkeypatch.setattr(TaskQueue, "requeue_many", and_fail_again)
    assert sitq(capsys, "requeue", "--failed", "-b", f"sqlite:///{path}") == (0, "requeued 7 tasks\n", "")
    asked = [task_id for page in calls for task_id in page]
    assert sorted(asked) == sorted(ids), "each task asked for once"
    assert set(statuses(path).values()) == {"failed"}


def test_requeue_of_ids_asks_once_per_page_and_names_the_others_in_order(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, calls: list[list[str]]
) -> None:
    path = tmp_path / "tasks.db"
    failed = failed_store(path, 4)

    async def one_queued() -> str:
        async with TaskQueue(SQLiteBackend(path)) as queue:
            return await queue.enqueue(add, 1)

    queued = asyncio.run(one_queued())
    given = [failed[0], queued, failed[1], "nosuch", failed[2], failed[0], failed[3]]
    code, out, err = sitq(capsys, "requeue", *given, "-b", f"sqlite:///{path}")
    assert (code, out) == (1, "requeued 4 tasks\n")
    assert err.splitlines() == [
        f"sitq: error: cannot requeue {queued}: it is queued, not failed or cancelled",
        "sitq: error: cannot requeue nosuch: no task with this id",
    ]
    assert calls == [[failed[0], queued, failed[1]], ["nosuch", failed[2], failed[3]]]
    code, out, err = sitq(capsys, "requeue", "--json", failed[0], "nosuch", "-b", f"sqlite:///{path}")
    assert code == 1 and '"requeued": []' in out and '"reason": "it is queued, not failed or cancelled"' in out


@pytest.mark.parametrize(
    ("under_way", "said"),
    [
        (0, "interrupted: requeued 6 tasks so far"),
        (1, "interrupted: requeued 6 tasks so far (the one under way may have been requeued too)"),
        (3, "interrupted: requeued 6 tasks so far (the 3 under way may have been requeued too)"),
    ],
)
def test_ctrl_c_names_the_page_under_way(under_way: int, said: str) -> None:
    assert cli_tasks._Progress(past="requeued", done=6, under_way=under_way).interrupted() == said
