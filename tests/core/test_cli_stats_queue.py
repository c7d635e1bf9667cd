"""``sitq stats --queue NAME``: the counts of one queue, as ``TaskQueue.counts(queue=...)`` gives them."""

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


@pytest.fixture
def url(tmp_path: Path) -> str:
    """A store with two tasks queued in 'default' and one in 'mail'."""

    async def seed() -> None:
        async with TaskQueue(SQLiteBackend(tmp_path / "tasks.db")) as queue:
            await queue.enqueue(add, 1)
            await queue.enqueue(add, 2)
            await queue.with_options(queue_name="mail").enqueue(add, 3)

    asyncio.run(seed())
    return f"sqlite:///{tmp_path / 'tasks.db'}"


def test_stats_of_one_queue_counts_only_its_tasks(capsys: pytest.CaptureFixture[str], url: str) -> None:
    code, out, err = sitq(capsys, "stats", "-b", url, "--queue", "mail", "--json")
    assert (code, err) == (0, "")
    counts = json.loads(out)
    everything = json.loads(sitq(capsys, "stats", "-b", url, "--json")[1])
    assert counts.keys() == everything.keys(), "the same shape, filtered counts"
    assert counts["queued"] == 1 and sum(counts.values()) == 1, counts
    assert everything["queued"] == 3
    code, out, _ = sitq(capsys, "stats", "-b", url, "--queue", "default")
    assert code == 0 and "queued     2" in out.splitlines(), out


def test_a_queue_without_tasks_counts_zero(capsys: pytest.CaptureFixture[str], url: str) -> None:
    code, out, err = sitq(capsys, "stats", "-b", url, "--queue", "nosuch", "--json")
    assert (code, err) == (0, "") and set(json.loads(out).values()) == {0}


def test_an_empty_queue_name_is_a_usage_error_naming_the_flag(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    missing = tmp_path / "missing.db"
    code, out, err = sitq(capsys, "stats", "-b", f"sqlite:///{missing}", "--queue", "")
    assert (code, out) == (2, "")
    assert err == "sitq: error: --queue: a queue name must be a non-empty string\n"
    assert not missing.exists()


def test_a_blank_queue_name_is_a_usage_error_too(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """The docs say an empty name exits 2; a name of spaces is empty once stripped (as `sitq worker -q` strips)."""
    missing = tmp_path / "missing.db"
    code, out, err = sitq(capsys, "stats", "-b", f"sqlite:///{missing}", "--queue", "  ")
    assert (code, out) == (2, "")
    assert err == "sitq: error: --queue: a queue name must be a non-empty string\n"
    assert not missing.exists()


def test_a_queue_name_is_stripped(capsys: pytest.CaptureFixture[str], url: str) -> None:
    code, out, err = sitq(capsys, "stats", "-b", url, "--queue", " mail ", "--json")
    assert (code, err) == (0, "") and json.loads(out)["queued"] == 1
