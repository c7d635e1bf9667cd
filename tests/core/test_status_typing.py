"""``list_tasks(status=...)`` takes a ``TaskStatus`` or its name, and type checkers know which names.

It was typed ``str``, so mypy accepted ``status="bogus"`` (a ValidationError at run time).
"""

from __future__ import annotations

import re
import subprocess
import textwrap
import typing
from pathlib import Path

import pytest

import sitq
from sitq import SyncTaskQueue, TaskStatus, TaskStatusName, ValidationError

from sitq_test_helpers import mypy_or_skip

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
    module = tmp_path / "user_status.py"
    module.write_text(USER_CODE, encoding="utf-8")
    expected = {n for n, line in enumerate(USER_CODE.splitlines(), 1) if line.rstrip().endswith("# error")}
    done = subprocess.run(
        [*mypy_or_skip(), "--strict", "--cache-dir", str(tmp_path / "mypy-cache"), str(module)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    found = {int(m[1]) for m in re.finditer(r"^user_status\.py:(\d+): error:", done.stdout, re.MULTILINE)}
    assert found == expected, f"errors on lines {sorted(found)}, expected {sorted(expected)}:\n{done.stdout}"


def test_the_names_are_the_enum_values() -> None:
    assert typing.get_args(TaskStatusName) == tuple(status.value for status in TaskStatus)


def test_an_unknown_name_is_still_refused_at_run_time() -> None:
    with SyncTaskQueue(sitq.SQLiteBackend(":memory:")) as queue:
        assert queue.list_tasks(status="failed") == []
        with pytest.raises(ValidationError, match="unknown status 'bogus'"):
            queue.list_tasks(status="bogus")  # type: ignore[arg-type]
