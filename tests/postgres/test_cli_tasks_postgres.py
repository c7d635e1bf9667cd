"""The task commands (tasks, requeue, cancel, show, purge) on PostgreSQL, as tests/core/test_cli_tasks.py on SQLite.

Each test gets a schema of its own on the server of ``SITQ_TEST_POSTGRES_DSN``;
without a server they skip, saying why (under ``CI=true`` they fail).
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import pytest

import sitq
from sitq_core import cli_tasks
from sitq_core.models import Outcome

from sitq_test_helpers import run_sitq as _sitq
from sitq_test_tasks import add, boom

pytestmark = pytest.mark.postgres


async def _finish(queue: sitq.TaskQueue, ids: list[str], kind: str, *, ago: timedelta = timedelta(0)) -> None:
    """Reserve exactly ``ids`` (the due tasks of queue 'default') and end each as ``kind``."""
    backend = queue.backend
    leases = await backend.reserve(worker_id="test", limit=len(ids), lease_seconds=60, queues=["default"])
    assert sorted(lease.id for lease in leases) == sorted(ids)
    at = backend.now() - ago
    outcomes = [
        Outcome(lease.id, lease.lease_token, kind, error="no\nreally" if kind == "failed" else None, finished_at=at)
        for lease in leases
    ]
    assert all(await backend.finish_many(outcomes))


def _seed(url: str) -> dict[str, list[str]]:
    """Five failed tasks, two succeeded three hours ago, one cancelled, one queued in 'mail', oldest first."""

    async def go() -> dict[str, list[str]]:
        async with sitq.connect(url) as queue:
            old = [await queue.enqueue(add, n) for n in range(2)]
            await _finish(queue, old, "success", ago=timedelta(hours=3))
            failed = [await queue.enqueue(boom) for _ in range(5)]
            await _finish(queue, failed, "failed")
            cancelled = [await queue.enqueue(add, 9)]
            assert await queue.cancel(cancelled[0])
            queued = [await queue.with_options(queue_name="mail").enqueue(add, 1)]
            return {"success": old, "failed": failed, "cancelled": cancelled, "queued": queued}

    return asyncio.run(go())


def _statuses(url: str) -> dict[str, str]:
    async def go() -> dict[str, str]:
        async with sitq.connect(url) as queue:
            return {task.id: str(task.status) for task in await queue.list_tasks(limit=1000)}

    return asyncio.run(go())


@pytest.fixture
def url(pg_dsn: str, pg_schema: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.delenv("SITQ_BACKEND", raising=False)
    return f"{pg_dsn}?schema={pg_schema}"


def test_tasks_lists_oldest_first_and_filters(capsys: pytest.CaptureFixture[str], url: str) -> None:
    ids = _seed(url)
    code, out, err = _sitq(capsys, "tasks", "-b", url, "--limit", "0")
    assert (code, err) == (0, "")
    order = [*ids["success"], *ids["failed"], *ids["cancelled"], *ids["queued"]]
    assert [row.split()[0] for row in out.splitlines()[1:]] == order
    first_failed = out.splitlines()[3].split(maxsplit=7)
    assert first_failed[1:5] == ["failed", "default", "sitq_test_tasks:boom", "1"] and first_failed[6:] == [
        "-",
        "no really",
    ]
    code, out, _ = _sitq(capsys, "tasks", "-b", url, "--status", "failed", "--limit", "2", "--offset", "1", "--json")
    assert code == 0 and [row["id"] for row in json.loads(out)] == ids["failed"][1:3]
    assert [row.split()[0] for row in _sitq(capsys, "tasks", "-b", url, "--queue", "mail")[1].splitlines()[1:]] == (
        ids["queued"]
    )


def test_requeue_by_id_and_every_failed_task(
    capsys: pytest.CaptureFixture[str], url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = _seed(url)
    code, out, err = _sitq(capsys, "requeue", ids["cancelled"][0], ids["queued"][0], "-b", url)
    assert (code, out) == (1, "requeued 1 task\n")
    assert err == f"sitq: error: cannot requeue {ids['queued'][0]}: it is queued, not failed or cancelled\n"
    monkeypatch.setattr(cli_tasks, "READ_PAGE", 2)  # three pages, each emptied as it is requeued
    monkeypatch.setattr(cli_tasks, "PAGE", 2)
    assert _sitq(capsys, "requeue", "--failed", "-b", url) == (0, "requeued 5 tasks\n", "")
    now = _statuses(url)
    assert all(now[task_id] == "queued" for task_id in [*ids["failed"], *ids["cancelled"]])


def test_cancel_and_show(capsys: pytest.CaptureFixture[str], url: str) -> None:
    ids = _seed(url)
    assert _sitq(capsys, "cancel", ids["queued"][0], "-b", url) == (0, "cancelled 1 task\n", "")
    shown = json.loads(_sitq(capsys, "show", ids["queued"][0], "-b", url, "--json")[1])
    assert shown["task"]["status"] == "cancelled" and shown["result"]["status"] == "cancelled"
    assert _sitq(capsys, "show", "nosuch", "-b", url) == (1, "", "sitq: error: no task with id 'nosuch'\n")


def test_purge_older_than_then_everything_final(capsys: pytest.CaptureFixture[str], url: str) -> None:
    ids = _seed(url)
    assert _sitq(capsys, "purge", "--older-than", "2h", "-b", url) == (
        0,
        "deleted 2 final tasks finished more than 2h ago\n",
        "",
    )
    assert _sitq(capsys, "purge", "-b", url, "--json") == (0, '{"deleted": 6}\n', "")
    assert list(_statuses(url)) == ids["queued"]


def test_a_schema_without_sitq_data_is_reported_and_not_created(capsys: pytest.CaptureFixture[str], url: str) -> None:
    code, out, err = _sitq(capsys, "purge", "-b", url)
    assert (code, out) == (2, "")
    assert err.startswith("sitq: error: no sitq data in ") and err.endswith("(check the --backend URL)\n"), err
    code, _, err = _sitq(capsys, "stats", "-b", url)
    assert code == 2 and "no sitq data in " in err  # still nothing there
