"""A URL's ``serializer`` query option means what a config mapping's ``serializer`` key means, wherever a URL goes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import sitq
from sitq import ConfigurationError, SyncTaskQueue, TaskExecutionError, TaskQueue, Worker
from sitq_core.cli import main

import sitq_test_tasks as tasks
from sitq_test_helpers import wait_until, wait_until_sync

TESTS = Path(__file__).resolve().parents[1]
RUN_CLI = "from sitq_core.cli import main; raise SystemExit(main())"


@pytest.mark.parametrize(
    "build",
    [
        lambda url: sitq.connect(url),
        lambda url: TaskQueue(url),
        lambda url: SyncTaskQueue(url).queue,
        lambda url: sitq.connect({"url": url}),
        lambda url: sitq.connect({"backend": url}),
    ],
    ids=["connect", "TaskQueue", "SyncTaskQueue", "mapping-url", "mapping-backend"],
)
def test_the_url_chooses_the_queue_serializer(build: Callable[[str], Any], tmp_path: Path) -> None:
    """Before: "unknown option 'serializer' for backend 'sqlite'"."""
    queue = build(f"sqlite:///{tmp_path / 'x.db'}?serializer=msgpack")
    assert queue.serializer.name == "msgpack"
    assert type(queue.backend).__name__ == "SQLiteBackend"


def test_sitq_backend_chooses_the_serializer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SITQ_BACKEND", f"sqlite:///{tmp_path / 'x.db'}?serializer=msgpack&synchronous=FULL")
    queue = sitq.connect()
    assert queue.serializer.name == "msgpack" and queue.backend.path == str(tmp_path / "x.db")


def test_an_explicit_serializer_wins_over_the_url(tmp_path: Path) -> None:
    """As over a config mapping's serializer."""
    queue = sitq.connect(f"sqlite:///{tmp_path / 'x.db'}?serializer=msgpack", serializer="cloudpickle")
    assert queue.serializer.name == "cloudpickle"


def test_a_url_and_a_mapping_that_disagree_on_the_serializer_are_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}?serializer=msgpack"
    with pytest.raises(ConfigurationError) as info:
        sitq.connect({"url": url, "serializer": "cloudpickle"})
    assert info.value.parameter == "serializer" and "msgpack" in info.value.message
    assert sitq.connect({"url": url, "serializer": "msgpack"}).serializer.name == "msgpack"  # the same: fine


def test_an_unknown_serializer_in_the_url_names_the_serializer(tmp_path: Path) -> None:
    with pytest.raises(sitq.UnknownSerializerError) as info:
        sitq.connect(f"sqlite:///{tmp_path / 'x.db'}?serializer=msgpak")
    assert "Did you mean 'msgpack'?" in info.value.message


def test_a_serializer_option_that_may_be_a_piece_of_a_password_is_not_taken(tmp_path: Path) -> None:
    """'?serializer=' after a secret option may be a piece of its value (a raw '&'): not read as a serializer."""
    with pytest.raises(ConfigurationError) as info:
        sitq.connect(f"sqlite:///{tmp_path / 'x.db'}?password=Tr0ub&serializer=msgpack")
    assert "msgpack" not in str(info.value) and "Tr0ub" not in str(info.value)


@pytest.mark.asyncio
async def test_a_worker_made_from_the_url_accepts_only_that_serializer(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    async with TaskQueue(url + "?serializer=msgpack") as packed, TaskQueue(url) as pickled:
        ok = await packed.enqueue(tasks.add, 2, 3)
        other = await pickled.enqueue(tasks.add, 1, 1)
        worker = Worker(url + "?serializer=msgpack")
        await worker.start()
        try:

            async def both_done() -> bool:
                return all([await packed.get_result(ok, timeout=0), await pickled.get_result(other, timeout=0)])

            await wait_until(both_done, timeout=30)
        finally:
            await worker.stop()
        assert packed.deserialize_result(await packed.get_result(ok)) == 5
        refused = await pickled.get_result(other)
        assert refused is not None and refused.status == "failed"
        assert "accepts only 'msgpack'" in (refused.error or ""), refused.error


def test_the_cli_worker_takes_the_serializer_from_the_url(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    with SyncTaskQueue(url) as pickled, SyncTaskQueue(url + "?serializer=msgpack") as packed:
        other = pickled.enqueue(tasks.add, 1, 1)
        ok = packed.enqueue(tasks.add, 2, 3)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
        worker = subprocess.Popen(
            [sys.executable, "-c", RUN_CLI, "worker", "-b", url + "?serializer=msgpack"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:

            def finished(queue: SyncTaskQueue, task_id: str) -> bool:
                try:
                    return queue.get_result(task_id, timeout=0) is not None
                except TaskExecutionError:  # the sync queue raises a failed task's error
                    return True

            wait_until_sync(lambda: finished(packed, ok) and finished(pickled, other), timeout=60)
        finally:
            worker.send_signal(signal.SIGTERM)
            _out, err = worker.communicate(timeout=60)
        assert worker.returncode == 0, err
        assert packed.get_result(ok) == 5  # the sync queue returns the value
        with pytest.raises(TaskExecutionError, match="accepts only 'msgpack'"):
            pickled.get_result(other)


def test_the_cli_flag_wins_over_the_url(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """-s given: the URL's serializer is not used (a bad one in the URL is not even looked up)."""
    code = main(["worker", "-b", f"sqlite:///{tmp_path / 'x.db'}?serializer=nosuch", "-s", "bogus"])
    err = capsys.readouterr().err
    assert code == 2 and "'bogus'" in err and "nosuch" not in err, err
