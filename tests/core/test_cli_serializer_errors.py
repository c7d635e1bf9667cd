"""Serializer plugins that go wrong, as a user of the API and of the ``sitq`` command sees them.

Each plugin is a real installed distribution (dist-info and entry point) in
a temporary folder on ``sys.path``, loaded by a fresh plugin manager.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import sitq
from sitq_core.errors import BackendNotInstalledError, PluginError
from sitq_core.plugin_manager import SitqPluginManager
from sitq_core.plugins import use_plugin_manager
from sitq_core.testing import check_plugin

from sitq_test_helpers import make_dist, run_sitq

UNBUILDABLE = """
from sitq_core.hookspecs import hookimpl
from sitq_core.serializers import CloudpickleSerializer


class NeedsArg(CloudpickleSerializer):
    name = "needsarg"

    def __init__(self, x):
        super().__init__()


class Raises(CloudpickleSerializer):
    name = "raises"

    def __init__(self):
        raise RuntimeError("no key configured")


@hookimpl
def sitq_register_serializers(register):
    register("needsarg", NeedsArg)
    register("raises", Raises)
"""

JSON = """
from sitq_core.hookspecs import hookimpl
from sitq_core.serializers import CloudpickleSerializer


class Json(CloudpickleSerializer):
    name = "json"


@hookimpl
def sitq_register_serializers(register):
    register("json", Json)
"""

TWO_NOT_SERIALIZERS = """
from sitq_core.hookspecs import hookimpl


class NotOne:
    name = "first"


@hookimpl
def sitq_register_serializers(register):
    register("first", NotOne)
    register("second", NotOne)
"""


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder of installed distributions, loaded by a fresh plugin manager for the test."""
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    for variable in ("SITQ_STRICT_PLUGINS", "SITQ_LOAD_PLUGINS", "SITQ_DISABLED_PLUGINS", "SITQ_BACKEND"):
        monkeypatch.delenv(variable, raising=False)
    make_dist(folder, "acme-unbuildable", "unbuildable", "acme_unbuildable", UNBUILDABLE)
    yield folder


def _fresh() -> SitqPluginManager:
    return SitqPluginManager()


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("needsarg", "cannot be built with no arguments"),
        ("raises", "failed when built with no arguments: RuntimeError: no key configured"),
    ],
)
def test_a_serializer_that_cannot_be_built_by_name_is_a_plugin_error(site: Path, name: str, says: str) -> None:
    """Before: a bare TypeError (or the plugin's RuntimeError) from resolve_serializer."""
    with use_plugin_manager(_fresh()), pytest.raises(PluginError) as info:
        sitq.resolve_serializer(name)
    message = info.value.message
    assert f"serializer {name!r}" in message and says in message, message
    assert "plugin 'unbuildable' (acme-unbuildable 1.0)" in message, message
    assert isinstance(info.value.__cause__, TypeError if name == "needsarg" else RuntimeError)
    assert info.value.parameter == "serializer" and info.value.value == name


@pytest.mark.parametrize("name", ["needsarg", "raises"])
def test_the_worker_command_says_so_on_one_line_and_exits_2(
    site: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    """Before: a traceback ending in TypeError, exit code 1."""
    with use_plugin_manager(_fresh()):
        code, _out, err = run_sitq(capsys, "worker", "-b", f"sqlite:///{tmp_path}/w.db", "-s", name)
    assert code == 2, err
    assert err.strip().splitlines()[-1].startswith(f"sitq: error: --serializer: {name!r}, registered by the plugin")
    assert "Traceback" not in err


def test_check_plugin_reports_a_serializer_that_cannot_be_built_by_name(site: Path) -> None:
    problems = check_plugin("unbuildable")
    assert any("'needsarg'" in p and "cannot be built with no arguments" in p for p in problems), problems
    assert any("'raises'" in p and "RuntimeError: no key configured" in p for p in problems), problems


def test_a_serializer_two_plugins_register_is_named_after_the_flag_and_a_colon(
    site: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: "sitq: error: --serializer 'json' is registered by both ...", unlike the flag's other errors."""
    make_dist(site, "acme-json-a", "json_a", "acme_json_a", JSON)
    make_dist(site, "acme-json-b", "json_b", "acme_json_b", JSON)
    with use_plugin_manager(_fresh()):
        code, _out, err = run_sitq(capsys, "worker", "-b", f"sqlite:///{tmp_path}/w.db", "-s", "json")
        assert code == 2, err
        assert "sitq: error: --serializer: 'json' is registered by both acme-json-a 1.0 and acme-json-b 1.0" in err
        code, _out, err = run_sitq(capsys, "stats", "-b", f"sqlite:///{tmp_path}/w.db?serializer=json")
        assert code == 2, err
        assert "sitq: error: --backend (its ?serializer=): 'json' is registered by both" in err, err


def test_a_worker_argument_error_still_reads_as_the_flag_itself(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _out, err = run_sitq(capsys, "worker", "-b", f"sqlite:///{tmp_path}/w.db", "--prefetch", "-3")
    assert code == 2 and "sitq: error: --prefetch must be" in err, err


def test_a_disabled_plugin_is_not_offered_as_a_serializer_name_and_is_named_once(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: "no serializer named 'json'. ... Did you mean 'jsonser'? The plugin 'jsonser' ... Installed but
    disabled ...: plugin 'jsonser' (acme-jsonser 1.0)." ('jsonser' is the plugin, not a serializer)."""
    make_dist(site, "acme-jsonser", "jsonser", "acme_jsonser", JSON)
    make_dist(site, "acme-other", "other", "acme_other", JSON.replace('"json"', '"other"'))
    monkeypatch.setenv("SITQ_DISABLED_PLUGINS", "jsonser,other")
    with use_plugin_manager(_fresh()), pytest.raises(PluginError) as info:
        sitq.resolve_serializer("json")
    message = info.value.message
    assert "Did you mean" not in message, message
    assert message.count("'jsonser'") == 1, message
    assert "The plugin 'jsonser' (acme-jsonser 1.0) may provide it" in message, message
    assert "disabled by SITQ_DISABLED_PLUGINS" in message, message
    assert "plugin 'other' (acme-other 1.0)" in message, message  # the other disabled plugin, listed once too
    assert message.count("'other'") == 1, message


def test_allow_task_with_a_serializer_that_takes_no_allow_list_says_what_it_lacks(
    site: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_dist(site, "acme-jsonser", "jsonser", "acme_jsonser", JSON)
    with use_plugin_manager(_fresh()):
        code, _out, err = run_sitq(
            capsys, "worker", "-b", f"sqlite:///{tmp_path}/w.db", "-s", "json", "--allow-task", "os:getcwd"
        )
    assert code == 2, err
    line = err.strip().splitlines()[-1]
    assert line.startswith("sitq: error: --allow-task: serializer 'json' (Json) takes no allowed_tasks argument"), line
    assert "whose __init__ takes allowed_tasks" in line, line


def test_sitq_plugins_shows_every_class_that_is_not_a_serializer(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: the plugin's line showed the last refused class only ('second'), not 'first'."""
    make_dist(site, "acme-notones", "notones", "acme_notones", TWO_NOT_SERIALIZERS)
    code, out, err = run_sitq(capsys, "plugins")
    assert code == 0, err
    line = next(line for line in out.splitlines() if line.startswith("notones "))
    assert "broken" in line and "serializer 'first'" in line and "serializer 'second'" in line, line
    assert "not a subclass of Serializer" in line, line


def test_without_a_plugin_manager_loading_entry_points_an_installed_backend_is_not_called_uninstalled() -> None:
    """Before: "backend 'sqlite' is provided by the sitq-sqlite distribution, which is not installed"."""
    with use_plugin_manager(SitqPluginManager(load_entrypoints=False)), pytest.raises(PluginError) as info:
        sitq.TaskQueue("sqlite:///never-made.db")
    assert not isinstance(info.value, BackendNotInstalledError)
    message = info.value.message
    assert "installed but not registered in the current plugin manager" in message, message
    assert "load_entrypoints=False" in message and "register_plugin(sitq_sqlite.plugin, 'sqlite')" in message


def test_without_the_msgpack_package_the_error_names_the_package_and_the_extra() -> None:
    code = (
        "import sys\n"
        "sys.modules['msgpack'] = None  # as if msgpack were not installed\n"
        "import sitq\n"
        "try:\n"
        "    sitq.resolve_serializer('msgpack')\n"
        "except sitq.SerializationError as exc:\n"
        "    print(exc.message)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    message = done.stdout.strip()
    assert message.startswith("serializer 'msgpack' needs the msgpack package: pip install msgpack"), message
    assert "pip install 'sitq[msgpack]'" in message, message
