"""``sitq cancel`` of a running task: it is only asked to stop, so it is not reported as cancelled."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from sitq import SQLiteBackend, TaskQueue

from sitq_test_helpers import run_sitq as sitq
from sitq_test_tasks import add


@pytest.fixture(autouse=True)
def _no_backend_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SITQ_BACKEND", raising=False)


def running_and_queued(path: Path) -> tuple[str, str]:
    async def go() -> tuple[str, str]:
        async with TaskQueue(SQLiteBackend(path)) as queue:
            running = await queue.enqueue(add, 1)
            await queue.backend.reserve(worker_id="test", limit=1, lease_seconds=60)
            return running, await queue.enqueue(add, 2)

    return asyncio.run(go())


def test_json_lists_a_running_task_under_stop_requested(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "tasks.db"
    running, queued = running_and_queued(path)
    code, out, err = sitq(capsys, "cancel", running, queued, "nosuch", "--json", "-b", f"sqlite:///{path}")
    assert (code, err.count("\n")) == (1, 1)
    assert json.loads(out) == {
        "cancelled": [queued],
        "stop_requested": [running],
        "not_cancelled": [{"id": "nosuch", "reason": "no task with this id"}],
    }


def test_plain_text_counts_the_running_task_apart(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "tasks.db"
    running, queued = running_and_queued(path)
    code, out, err = sitq(capsys, "cancel", running, queued, "-b", f"sqlite:///{path}")
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "cancelled 1 task; asked the worker of 1 running task to stop it",
        f"{running}: running: its worker is told to stop it, and it ends cancelled when the worker hears",
    ]
