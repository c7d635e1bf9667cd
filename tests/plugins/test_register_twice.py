"""Registering in code a plugin object that is already registered: a plain sitq error, or nothing at all.

``register_plugin`` passed pluggy's raw ``ValueError`` through, with a dict of
every plugin in its text, when a program registered a module an entry point
had already loaded.
"""

from __future__ import annotations

import importlib
import sys
import textwrap
from pathlib import Path

import pytest

from sitq_core import Task, hookimpl
from sitq_core.errors import BrokenPluginError, ConfigurationError
from sitq_core.plugin_manager import SitqPluginManager

METRICS = """
from sitq_core.hookspecs import hookimpl

SEEN = []


@hookimpl
def sitq_task_enqueued(task):
    SEEN.append(task.id)
"""


@pytest.fixture
def metrics_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """An installed distribution ``acme-metrics`` whose entry point ``metrics`` names ``acme_metrics_twice``."""
    site = tmp_path / "site"
    info = site / "acme_metrics-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-metrics\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[sitq]\nmetrics = acme_metrics_twice\n")
    (site / "acme_metrics_twice.py").write_text(textwrap.dedent(METRICS))
    monkeypatch.syspath_prepend(str(site))
    for variable in ("SITQ_STRICT_PLUGINS", "SITQ_LOAD_PLUGINS", "SITQ_DISABLED_PLUGINS"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.delitem(sys.modules, "acme_metrics_twice", raising=False)
    return "acme_metrics_twice"


def test_a_module_an_entry_point_loaded_is_refused_under_another_name(metrics_dist: str) -> None:
    manager = SitqPluginManager()
    manager.ensure_loaded()
    module = importlib.import_module(metrics_dist)
    with pytest.raises(BrokenPluginError) as caught:
        manager.register_plugin(module, "metrics2")
    message = caught.value.message
    assert isinstance(caught.value, ConfigurationError)
    assert "'metrics2'" in message and "already" in message, message
    assert "already loaded from entry point 'metrics' (acme-metrics 1.0)" in message, message
    assert "{" not in message, f"pluggy's dict of every plugin: {message}"
    assert "metrics2" not in manager.records and manager.get_name(module) == "metrics"
    manager.notify("sitq_task_enqueued", task=Task(id="t1", payload=b""))
    assert module.SEEN == ["t1"], "its hooks still run once"


def test_registering_it_again_under_its_own_name_changes_nothing(metrics_dist: str) -> None:
    manager = SitqPluginManager()
    manager.ensure_loaded()
    module = importlib.import_module(metrics_dist)
    manager.register_plugin(module, "metrics")
    assert manager.records["metrics"].dist == "acme-metrics" and not manager.records["metrics"].in_code
    manager.notify("sitq_task_enqueued", task=Task(id="t1", payload=b""))
    assert module.SEEN == ["t1"]


class Counter:
    def __init__(self) -> None:
        self.seen = 0

    @hookimpl
    def sitq_task_enqueued(self, task: Task) -> None:
        self.seen += 1


def test_an_object_registered_in_code_twice() -> None:
    manager = SitqPluginManager(load_entrypoints=False)
    counter = Counter()
    manager.register_plugin(counter, "counter")
    manager.register_plugin(counter, "counter")  # a module that registers itself, imported by two paths
    refused = r"already registered in code as plugin 'counter'.*unregister_plugin\('counter'\)"
    with pytest.raises(BrokenPluginError, match=refused):
        manager.register_plugin(counter, "counter-again")
    manager.notify("sitq_task_enqueued", task=Task(id="t1", payload=b""))
    assert counter.seen == 1


def test_a_name_already_taken_by_another_plugin_is_refused() -> None:
    manager = SitqPluginManager(load_entrypoints=False)
    first, second = Counter(), Counter()
    manager.register_plugin(first, "counter")
    with pytest.raises(BrokenPluginError) as caught:
        manager.register_plugin(second, "counter")
    message = caught.value.message
    assert "name 'counter' is taken" in message and "Counter" in message and "{" not in message, message
    manager.notify("sitq_task_enqueued", task=Task(id="t1", payload=b""))
    assert (first.seen, second.seen) == (1, 0)
