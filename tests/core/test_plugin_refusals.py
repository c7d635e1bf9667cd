"""A broken plugin's hooks are never called, however it came in: an entry point, or ``register_plugin`` in code."""

from __future__ import annotations

import logging
import sys
import textwrap
import types
from pathlib import Path
from typing import Any

import pytest

from sitq import SerializationError, SQLiteBackend, TaskQueue, Worker, hookimpl
from sitq_core.errors import BrokenPluginError
from sitq_core.models import Task, new_id
from sitq_core.plugin_manager import SitqPluginManager
from sitq_core.plugins import get_plugin_manager, use_plugin_manager

CALLS: list[str] = []


def install(site: Path, dist: str, plugins: dict[str, str]) -> None:
    """Write an installed distribution into ``site`` whose entry points (name -> module source) are ``plugins``."""
    info = site / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    lines = [f"{name} = {dist.replace('-', '_')}_{name}" for name in plugins]
    (info / "entry_points.txt").write_text("[sitq]\n" + "\n".join(lines) + "\n")
    for name, source in plugins.items():
        (site / f"{dist.replace('-', '_')}_{name}.py").write_text(textwrap.dedent(source))


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    for name in [name for name in sys.modules if name.startswith("acme_")]:  # a module of another test's site
        monkeypatch.delitem(sys.modules, name)
    for variable in ("SITQ_STRICT_PLUGINS", "SITQ_LOAD_PLUGINS", "SITQ_DISABLED_PLUGINS"):
        monkeypatch.delenv(variable, raising=False)
    CALLS.clear()
    return folder


def module(name: str, source: str) -> types.ModuleType:
    """A module made from ``source``, as an application's observer module would be."""
    made = types.ModuleType(name)
    exec(textwrap.dedent(source), made.__dict__)
    return made


TYPO = """
    from sitq_core import hookimpl

    @hookimpl
    def sitq_task_enqueud(task):
        pass
    """

ASYNC = """
    from sitq_core import hookimpl

    @hookimpl
    async def sitq_task_enqueued(task):
        pass
    """

WRONG_PARAMETER = """
    from sitq_core import hookimpl

    @hookimpl
    def sitq_task_started(task, attempt, worker):
        pass
    """

# a broken plugin's valid hook beside its mistake: it must never be called
FAILED_HOOK = """

    @hookimpl
    def sitq_task_failed(task, error, will_retry):
        import test_plugin_refusals
        test_plugin_refusals.CALLS.append("{name}")
    """


@pytest.mark.parametrize(
    ("source", "said"),
    [
        (TYPO, "unknown hook sitq_task_enqueud; did you mean sitq_task_enqueued?"),
        (ASYNC, "sitq_task_enqueued is 'async def', which sitq never awaits"),
        (WRONG_PARAMETER, "sitq_task_started(task, attempt, worker)"),
    ],
)
def test_register_plugin_refuses_a_plugin_an_entry_point_would_leave_broken(source: str, said: str) -> None:
    """An application's observer with a misspelt or async hook was accepted as ok and never (properly) called."""
    manager = get_plugin_manager()
    with pytest.raises(BrokenPluginError) as info:
        manager.register_plugin(module("app_observer", source), "app-observer")
    assert said in str(info.value), str(info.value)
    assert "'app-observer' (registered in code)" in str(info.value), str(info.value)
    assert manager.get_plugin("app-observer") is None and "app-observer" not in manager.records
    assert not manager.has_observers("sitq_task_enqueued")


def test_register_plugin_keeps_a_working_plugin_with_a_warning() -> None:
    manager = SitqPluginManager(load_entrypoints=False, strict=True)
    source = """
        from sitq_core import hookimpl

        @hookimpl
        def sitq_task_enqueued(task):
            pass

        def sitq_task_started(task, attempt, worker_id):  # unmarked beside a working hook: a warning
            pass
        """
    manager.register_plugin(module("half_marked", source), "half-marked")
    record = manager.records["half-marked"]
    assert record.status == "ok" and any("not marked as a hook" in w for w in record.warnings), record
    assert manager.has_observers("sitq_task_enqueued")


@pytest.mark.parametrize("mistake", [TYPO, ASYNC, WRONG_PARAMETER], ids=["typo", "async", "parameter"])
def test_an_installed_broken_plugin_has_none_of_its_hooks_called(
    site: Path, mistake: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Only a plugin broken by a wrong parameter name was silent; the others' valid hooks ran on every event."""
    install(site, "acme-half-broken", {"halfbroken": mistake + FAILED_HOOK.format(name="halfbroken")})
    manager = SitqPluginManager()
    record = {r.name: r for r in manager.plugin_records()}["halfbroken"]
    assert record.status == "broken", record
    task = Task(id="t1", payload=b"")
    with caplog.at_level(logging.ERROR, logger="sitq.plugins"):
        for _ in range(3):
            manager.notify("sitq_task_enqueued", task=task)
            manager.notify("sitq_task_failed", task=task, error=ValueError("boom"), will_retry=False)
    assert CALLS == []
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert manager.get_plugin("halfbroken") is None


def test_a_plugin_broken_by_its_registrations_has_its_observers_silenced_too(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[str] = []

    class Plugin:
        @hookimpl
        def sitq_register_backends(self, register: Any) -> None:
            raise RuntimeError("kaboom")

        @hookimpl
        def sitq_task_enqueued(self, task: Task) -> None:
            seen.append(task.id)

    manager = SitqPluginManager(load_entrypoints=False, strict=False)
    manager.register_plugin(Plugin(), "half-registered")
    assert manager.records["half-registered"].status == "ok"
    manager.notify("sitq_task_enqueued", task=Task(id="before", payload=b""))
    manager.collect()
    assert manager.records["half-registered"].status == "broken"
    manager.notify("sitq_task_enqueued", task=Task(id="after", payload=b""))
    assert seen == ["before"]


def test_strict_mode_finds_entry_points_in_name_order_whatever_broke_them(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An async hook (h11a) and a wrong parameter name (h11b): strict mode raised h11b's error first."""
    install(site, "acme-order", {"h11a": ASYNC, "h11b": WRONG_PARAMETER})
    monkeypatch.setenv("SITQ_STRICT_PLUGINS", "1")
    manager = SitqPluginManager()
    with pytest.raises(BrokenPluginError) as info:
        manager.ensure_loaded()
    assert "sitq plugin 'h11a'" in str(info.value), str(info.value)
    assert {name: manager.records[name].status for name in ("h11a", "h11b")} == {"h11a": "broken", "h11b": "broken"}


def test_check_plugin_logs_another_plugins_load_failure_once(site: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Each check_plugin call loaded every installed plugin again and repeated their 'failed to load' warnings."""
    from sitq_core.testing import check_plugin

    good = """
        from sitq_core import hookimpl

        @hookimpl
        def sitq_task_enqueued(task):
            pass
        """
    install(site, "acme-fine", {"fine": good})
    install(site, "acme-typo", {"typo": TYPO})
    with caplog.at_level(logging.WARNING, logger="sitq.plugins"):
        for _ in range(3):
            assert check_plugin("fine") == []
        get_plugin_manager().ensure_loaded()
    failures = [r for r in caplog.records if "failed to load" in r.getMessage()]
    assert len(failures) == 1 and "typo" in failures[0].getMessage(), [r.getMessage() for r in failures]


class Failures:
    def __init__(self) -> None:
        self.errors: list[BaseException | str] = []

    @hookimpl
    def sitq_task_failed(self, task: Task, error: BaseException | str, will_retry: bool) -> None:
        self.errors.append(error)


@pytest.mark.asyncio
@pytest.mark.parametrize("serializer", ["cloudpickle", "no-such-serializer"])
async def test_an_unreadable_payload_reaches_the_failed_hook_as_an_exception(tmp_path: Path, serializer: str) -> None:
    """As plugins.md says: an exception instance for every failure a worker reports, the unreadable payload too."""
    failures = Failures()
    manager = SitqPluginManager(load_entrypoints=False)
    manager.register_plugin(failures, "failures")
    with use_plugin_manager(manager):
        backend = SQLiteBackend(tmp_path / "unreadable.db")
        async with TaskQueue(backend) as queue:
            unreadable = Task(id=new_id(), payload=b"\x00not a payload", serializer=serializer, function_name="x:f")
            await backend.enqueue(unreadable)
            worker = Worker(backend)
            await worker.start()
            try:
                result = await queue.get_result(unreadable.id, timeout=10)
            finally:
                await worker.stop()
    assert result is not None and result.status == "failed"
    assert (result.error or "").startswith("cannot load task x:f: "), result.error
    [error] = failures.errors
    assert isinstance(error, SerializationError), repr(error)
    assert str(error.message) in (result.error or "") and "(context:" not in (
        result.error or ""
    )  # stored by its message
