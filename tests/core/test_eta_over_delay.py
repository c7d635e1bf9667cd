"""An ``eta=`` given to ``enqueue`` takes precedence over a view's ``delay`` option, as the API reference says."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sitq import SQLiteBackend, SyncTaskQueue, ValidationError

import sitq_test_tasks as tasks


def test_enqueues_eta_wins_over_the_views_delay(tmp_path: Path) -> None:
    with SyncTaskQueue(SQLiteBackend(tmp_path / "q.db")) as queue:
        view = queue.with_options(delay=3600)
        at = datetime.now(UTC) + timedelta(minutes=5)
        task = queue.get_task(view.enqueue(tasks.add, 1, eta=at))
        assert task is not None and task.eta == at
        before = datetime.now(UTC)
        past = queue.get_task(view.enqueue(tasks.add, 1, eta=before - timedelta(days=1)))
        assert past is not None and before <= past.eta < before + timedelta(minutes=30)  # a past eta: now
        delayed = queue.get_task(view.enqueue(tasks.add, 1))
        assert delayed is not None and delayed.eta >= before + timedelta(minutes=59)
        with pytest.raises(ValidationError, match="not both"):
            queue.with_options(delay=60, eta=at)
