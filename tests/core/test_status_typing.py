"""``list_tasks(status=...)`` takes a ``TaskStatus`` or its name, and type checkers know which names.

It was typed ``str``, so mypy accepted ``status="bogus"`` (a ValidationError at run time).
"""

from __future__ import annotations

import textwrap
import typing
from pathlib import Path

import pytest

import sitq
from sitq import SyncTaskQueue, TaskStatus, TaskStatusName, ValidationError

from sitq_test_helpers import assert_mypy_flags_marked_lines

USER_CODE = textwrap.dedent(
    """
    from sitq import SyncTaskQueue, TaskQueue, TaskStatus, TaskStatusName

    async def main(queue: TaskQueue, sync: SyncTaskQueue, wanted: TaskStatusName) -> None:
        await queue.list_tasks(status="failed")
        await queue.list_tasks(status=TaskStatus.QUEUED)
        await queue.list_tasks(status=wanted)
        await queue.list_tasks(status=None)
        sync.list_tasks(status="cancelled")
        sync.list_tasks(status=TaskStatus.RUNNING)
        await queue.list_tasks(status="bogus")  # error
        sync.list_tasks(status="Failed")  # error
    """
)


@pytest.mark.slow
def test_mypy_flags_an_unknown_status_name(tmp_path: Path) -> None:
    assert_mypy_flags_marked_lines(USER_CODE, tmp_path, "user_status")


def test_the_names_are_the_enum_values() -> None:
    assert typing.get_args(TaskStatusName) == tuple(status.value for status in TaskStatus)


def test_an_unknown_name_is_still_refused_at_run_time() -> None:
    with SyncTaskQueue(sitq.SQLiteBackend(":memory:")) as queue:
        assert queue.list_tasks(status="failed") == []
        with pytest.raises(ValidationError, match="unknown status 'bogus'"):
            queue.list_tasks(status="bogus")  # type: ignore[arg-type]
