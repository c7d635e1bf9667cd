"""Task signatures survive the decorator for type checkers (mypy --strict on a user's module)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

USER_CODE = textwrap.dedent(
    """
    from sitq import TaskQueue, task

    @task(max_retries=2)
    async def send(to: str, copies: int = 1) -> bool:
        return True

    async def main(queue: TaskQueue) -> None:
        ok: bool = await send("a@example.com")
        bound = send.bind(queue)
        task_id: str = await bound.enqueue("a@example.com", copies=2)
        await bound.enqueue(42)                      # line 12: wrong type
        await bound.enqueue("a@example.com", cc=1)   # line 13: unknown keyword

    def build(queue: TaskQueue) -> None:
        @queue.task(max_retries=1)
        async def resize(path: str, width: int) -> str:
            return path

        @queue.task
        def plain(path: str) -> None:
            return None

        async def use() -> None:
            await resize.enqueue("a.png", width="wide")   # line 25: wrong type, through @queue.task(...)
            await plain.enqueue(3)                        # line 26: wrong type, through @queue.task
    """
)


@pytest.mark.slow
def test_enqueue_is_checked_against_the_function_signature(tmp_path: Path) -> None:
    module = tmp_path / "user_tasks.py"
    module.write_text(USER_CODE)
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(module)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "MYPYPATH": str(Path(__file__).resolve().parents[2])},  # the facade's editable finder
    )
    errors = [line for line in done.stdout.splitlines() if ": error:" in line]
    assert any("user_tasks.py:12:" in line and '"int"' in line for line in errors), done.stdout
    assert any("user_tasks.py:13:" in line and "cc" in line for line in errors), done.stdout
    assert any("user_tasks.py:25:" in line and '"str"' in line for line in errors), done.stdout
    assert any("user_tasks.py:26:" in line and '"int"' in line for line in errors), done.stdout
    assert len(errors) == 4, done.stdout
