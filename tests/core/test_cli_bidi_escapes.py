"""Stored texts cannot reorder what the terminal shows: Unicode bidi controls are escaped like control characters."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sitq import SQLiteBackend, TaskQueue
from sitq_core.models import Outcome

from sitq_test_helpers import run_sitq as sitq
from sitq_test_tasks import boom

BIDI = "".join(map(chr, [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]))
ERROR = "invoice\u202etxt.exe\u202c paid \u2067abc\u2069 ok"


@pytest.fixture(autouse=True)
def _no_backend_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SITQ_BACKEND", raising=False)


@pytest.fixture
def store(tmp_path: Path) -> tuple[str, str]:
    path = tmp_path / "tasks.db"

    async def go() -> str:
        async with TaskQueue(SQLiteBackend(path)) as queue:
            task_id = await queue.enqueue(boom)
            (lease,) = await queue.backend.reserve(worker_id="test", limit=1, lease_seconds=60)
            await queue.backend.finish_many([Outcome(lease.id, lease.lease_token, "failed", error=ERROR + BIDI)])
            return task_id

    return f"sqlite:///{path}", asyncio.run(go())


def test_tasks_and_show_escape_bidi_controls(capsys: pytest.CaptureFixture[str], store: tuple[str, str]) -> None:
    url, task_id = store
    for args in (["tasks"], ["show", task_id]):
        code, out, err = sitq(capsys, *args, "-b", url)
        assert (code, err) == (0, ""), args
        assert not any(char in out for char in BIDI), args
        assert "invoice\\u202etxt.exe\\u202c paid \\u2067abc\\u2069 ok" in out, args
