"""Plugin discovery through real entry points of temporary distributions on sys.path."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

from sitq import ConfigurationError, hookimpl
from sitq_core.errors import (
    BackendNotInstalledError,
    BrokenPluginError,
    PluginConflictError,
    PluginError,
    UnknownBackendError,
)
from sitq_core.plugin_manager import KNOWN_PLUGINS, SitqPluginManager
from sitq_core.plugins import get_plugin_manager

from sitq_test_helpers import make_dist

GOOD_BACKEND = """
from sitq_core.hookspecs import hookimpl

@hookimpl
def sitq_register_backends(register):
    register("{name}", "sitq_dictstore.backend:DictStoreBackend", description="test copy")
"""


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delenv("SITQ_STRICT_PLUGINS", raising=False)
    monkeypatch.delenv("SITQ_LOAD_PLUGINS", raising=False)
    monkeypatch.delenv("SITQ_DISABLED_PLUGINS", raising=False)
    return folder


def test_installed_plugins_found_by_entry_point() -> None:
    manager = SitqPluginManager()
    records = {r.name: r for r in manager.plugin_records()}
    assert records["sqlite"].dist == "sitq-sqlite" and records["sqlite"].status == "ok"
    assert "sqlite" in records["sqlite"].backends
    assert records["dictstore"].dist == "sitq-dictstore"
    assert "sitq_register_backends" in records["dictstore"].hooks
    builtin = {r.name: r for r in manager.plugin_records(include_builtin=True)}
    assert {"cloudpickle", "msgpack"} <= set(builtin["sitq_core.builtin_plugin"].serializers)


def test_broken_plugin_is_reported_and_others_keep_working(site: Path) -> None:
    make_dist(site, "acme-broken", "acme", "acme_broken_plugin", "import no_such_dependency_xyz\n")
    manager = SitqPluginManager()
    record = {r.name: r for r in manager.plugin_records()}["acme"]
    assert record.status == "broken" and record.dist == "acme-broken"
    assert "No module named 'no_such_dependency_xyz'" in (record.error or "")
    assert manager.backend_class("sqlite").__name__ == "SQLiteBackend"
    with pytest.raises(BrokenPluginError) as info:
        manager.backend_class("acme")
    message = str(info.value)
    assert "acme-broken" in message and "no_such_dependency_xyz" in message


def test_strict_mode_raises_on_a_broken_plugin(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_dist(site, "acme-broken", "acme", "acme_broken_plugin2", "raise RuntimeError('kaboom')\n")
    monkeypatch.setenv("SITQ_STRICT_PLUGINS", "1")
    with pytest.raises(BrokenPluginError, match="kaboom"):
        SitqPluginManager().ensure_loaded()


def test_strict_mode_still_loads_the_other_plugins_before_raising(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # "acme" sorts before "sqlite": raising at once left sitq-sqlite unloaded, and the next lookup in the
    # same process said it was "not installed"
    make_dist(site, "acme-broken", "acme", "acme_broken_plugin4", "raise RuntimeError('kaboom')\n")
    monkeypatch.setenv("SITQ_STRICT_PLUGINS", "1")
    manager = SitqPluginManager()
    with pytest.raises(BrokenPluginError, match="kaboom"):
        manager.backend_class("sqlite")
    with pytest.raises(BrokenPluginError, match="kaboom"):  # strict stays strict: not only the first use fails
        manager.backend_class("sqlite")
    monkeypatch.delenv("SITQ_STRICT_PLUGINS")
    assert manager.backend_class("sqlite").__name__ == "SQLiteBackend"
    assert {r.name: r.status for r in manager.plugin_records()}["acme"] == "broken"


def test_strict_mode_raises_even_when_a_plugin_resolves_names_while_loading(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_dist(site, "acme-broken", "aaa", "aaa_broken_plugin", "raise RuntimeError('kaboom')\n")
    make_dist(  # its import collects the registry while the others still load (allowed on the loading thread)
        site,
        "acme-resolver",
        "bbb",
        "bbb_resolver_plugin",
        "from sitq_core.plugins import get_plugin_manager\nget_plugin_manager().collect()\n",
    )
    monkeypatch.setenv("SITQ_STRICT_PLUGINS", "1")
    with pytest.raises(BrokenPluginError, match="kaboom"):
        get_plugin_manager().backend_class("sqlite")


def test_the_plugins_command_lists_a_broken_plugin_even_in_strict_mode(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    from sitq_core.cli import main

    make_dist(site, "acme-broken", "acme", "acme_broken_plugin3", "raise RuntimeError('kaboom')\n")
    monkeypatch.setenv("SITQ_STRICT_PLUGINS", "1")
    out = io.StringIO()
    assert main(["plugins"], stdout=out) == 0
    line = next(line for line in out.getvalue().splitlines() if line.startswith("acme "))
    assert "broken" in line and "kaboom" in line


def test_the_plugins_command_shows_what_an_observer_observes(site: Path) -> None:
    import io

    from sitq_core.cli import main

    observer = (
        "from sitq_core import hookimpl\n\n"
        "@hookimpl\ndef sitq_task_failed(task, error, will_retry):\n    pass\n\n"
        "@hookimpl\ndef sitq_task_succeeded(task, result, duration):\n    pass\n"
    )
    make_dist(site, "acme-metrics", "acmemetrics", "acme_metrics_observer", observer)
    out = io.StringIO()
    assert main(["plugins"], stdout=out) == 0
    lines = out.getvalue().splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("acmemetrics "))
    assert lines[at + 1].split() == ["observes:", "sitq_task_failed,", "sitq_task_succeeded"]


def test_broken_target_class_names_the_plugin(site: Path) -> None:
    make_dist(
        site,
        "acme-half",
        "half",
        "acme_half_plugin",
        """
        from sitq_core.hookspecs import hookimpl
        from sitq_core.backend import Backend

        class HalfBackend(Backend):
            async def connect(self): ...

        @hookimpl
        def sitq_register_backends(register):
            register("half", HalfBackend)
            register("ghost", "acme_half_plugin:Missing")
        """,
    )
    manager = SitqPluginManager()
    with pytest.raises(BrokenPluginError, match=r"acme-half 1.0.*does not implement: .*reserve"):
        manager.backend_class("half")
    with pytest.raises(BrokenPluginError, match=r"ghost.*acme-half.*failed to import"):
        manager.backend_class("ghost")


def test_the_cli_shows_a_broken_plugins_traceback_when_strict_mode_is_asked_for(
    site: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The error's own hint says 'Set SITQ_STRICT_PLUGINS=1 for the traceback'; the CLI printed one line anyway."""
    from sitq_core.cli import main
    from sitq_core.plugins import use_plugin_manager

    make_dist(site, "acme-crash", "crash", "acme_crash_plugin", "raise ImportError('no wheel for this platform')\n")
    monkeypatch.setenv("SITQ_STRICT_PLUGINS", "1")
    with use_plugin_manager(SitqPluginManager()):
        assert main(["stats", "-b", "crash://"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "no wheel for this platform" in err and "sitq: error:" in err


def test_conflicting_names_name_both_distributions(site: Path) -> None:
    make_dist(site, "acme-one", "one", "acme_one_plugin", GOOD_BACKEND.format(name="twin"))
    make_dist(site, "acme-two", "two", "acme_two_plugin", GOOD_BACKEND.format(name="twin"))
    manager = SitqPluginManager()
    with pytest.raises(PluginConflictError) as info:
        manager.backend_class("twin")
    assert "acme-one" in str(info.value) and "acme-two" in str(info.value)
    assert "SITQ_DISABLED_PLUGINS=one or SITQ_DISABLED_PLUGINS=two" in str(info.value)
    assert manager.backend_class("sqlite").__name__ == "SQLiteBackend"  # unrelated names unaffected
    records = {r.name: r for r in manager.plugin_records()}
    for name in ("one", "two"):
        assert records[name].status == "conflict" and "backend 'twin'" in (records[name].error or "")


def test_disabling_one_side_settles_a_conflict(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_dist(site, "acme-one", "one", "acme_one_plugin_b", GOOD_BACKEND.format(name="twin"))
    make_dist(site, "acme-two", "two", "acme_two_plugin_b", GOOD_BACKEND.format(name="twin"))
    monkeypatch.setenv("SITQ_DISABLED_PLUGINS", "two")
    manager = SitqPluginManager()
    assert manager.backend_class("twin").__name__ == "DictStoreBackend"
    assert {r.name: r.status for r in manager.plugin_records()}["one"] == "ok"


def test_the_backends_command_marks_a_name_two_plugins_claim(site: Path) -> None:
    import io
    import json

    from sitq_core.cli import main

    make_dist(site, "acme-one", "one", "acme_one_plugin_c", GOOD_BACKEND.format(name="twin"))
    make_dist(site, "acme-two", "two", "acme_two_plugin_c", GOOD_BACKEND.format(name="twin"))
    out = io.StringIO()
    assert main(["backends"], stdout=out) == 0
    line = next(line for line in out.getvalue().splitlines() if " twin " in line)
    assert "CONFLICT" in line and "SITQ_DISABLED_PLUGINS=two" in line  # not listed as a normal choice
    out = io.StringIO()
    main(["backends", "--json"], stdout=out)
    rows = {row["name"]: row for row in json.loads(out.getvalue())}
    assert rows["twin"]["conflict"] is True and rows["sqlite"]["conflict"] is False


def test_the_backends_command_lists_a_disabled_third_party_plugin(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import io
    import json

    from sitq_core.cli import main

    make_dist(site, "acme-quiet", "quiet", "acme_quiet_plugin", GOOD_BACKEND.format(name="quiet"))
    monkeypatch.setenv("SITQ_DISABLED_PLUGINS", "quiet")
    out = io.StringIO()
    assert main(["backends"], stdout=out) == 0
    line = next((line for line in out.getvalue().splitlines() if " quiet " in f" {line} "), None)
    assert line is not None and "disabled by SITQ_DISABLED_PLUGINS" in line, out.getvalue()
    out = io.StringIO()
    main(["backends", "--json"], stdout=out)
    row = {row["name"]: row for row in json.loads(out.getvalue())}["quiet"]
    assert (row["installed"], row["dist"], row["schemes"]) == (True, "acme-quiet", [])


def test_plugin_switches_take_distribution_names_too(
    site: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    make_dist(site, "acme-one", "one", "acme_one_plugin_d", GOOD_BACKEND.format(name="twin"))
    make_dist(site, "acme-two", "two", "acme_two_plugin_d", GOOD_BACKEND.format(name="twin"))
    monkeypatch.setenv("SITQ_DISABLED_PLUGINS", "Acme_Two")  # the distribution, spelt differently
    manager = SitqPluginManager()
    records = {r.name: r for r in manager.plugin_records()}
    assert records["two"].status == "disabled" and records["one"].status == "ok"
    assert manager.backend_class("twin").__name__ == "DictStoreBackend"  # the conflict is settled
    monkeypatch.setenv("SITQ_DISABLED_PLUGINS", "acme-three")
    with caplog.at_level("WARNING", logger="sitq.plugins"):
        SitqPluginManager().plugin_records()
    assert "SITQ_DISABLED_PLUGINS names 'acme-three'" in caplog.text  # a name that matches nothing is said


def test_a_plugin_cannot_take_over_a_builtin_name(site: Path) -> None:
    make_dist(
        site,
        "acme-impostor",
        "impostor",
        "acme_impostor_plugin",
        """
        from sitq_core.hookspecs import hookimpl
        from sitq_core.serializers import CloudpickleSerializer

        class Impostor(CloudpickleSerializer):
            name = "msgpack"

        @hookimpl
        def sitq_register_serializers(register):
            register("msgpack", Impostor)
            register("impostor-json", Impostor)
        """,
    )
    manager = SitqPluginManager()
    assert manager.serializer_class("msgpack").__name__ == "MsgpackSerializer"  # the built-in still wins
    record = {r.name: r for r in manager.plugin_records()}["impostor"]
    assert record.status == "conflict" and "built into sitq-core" in (record.error or "")
    assert record.serializers == ["impostor-json"]  # credited only with what it really provides
    assert manager.serializer_class("impostor-json").__name__ == "Impostor"


def test_unknown_name_lists_installed_backends() -> None:
    manager = SitqPluginManager()
    with pytest.raises(UnknownBackendError) as info:
        manager.backend_class("sqlit")
    assert isinstance(info.value, ConfigurationError)
    message = str(info.value)
    assert "Installed: dictstore, postgres, sqlite" in message and "Did you mean 'sqlite'?" in message
    assert info.value.valid_options == ["dictstore", "postgres", "sqlite"]


def test_known_but_absent_backend_gives_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    # A name sitq knows about whose distribution is not installed (sitq-postgres is, in this environment).
    monkeypatch.setitem(KNOWN_PLUGINS, "mysql", ("sitq-mysql", "sitq[mysql]"))
    with pytest.raises(BackendNotInstalledError, match=r"pip install 'sitq\[mysql\]'") as info:
        SitqPluginManager().backend_class("mysql")
    # sitq is not on PyPI yet (the name there is another project's): a checkout installs the package's folder
    assert "from a source checkout of sitq, in its folder: pip install ./sitq_mysql" in str(info.value)


def test_disabled_plugins_say_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SITQ_DISABLED_PLUGINS", "dictstore")
    manager = SitqPluginManager()
    with pytest.raises(PluginError, match="disabled by SITQ_DISABLED_PLUGINS"):
        manager.backend_class("dictstore")
    monkeypatch.setenv("SITQ_DISABLED_PLUGINS", "postgres")
    for scheme in ("postgresql", "postgresql+asyncpg", "postgres"):  # the aliases too, not only the entry point
        with pytest.raises(PluginError, match="sitq-postgres, which is installed but disabled by SITQ_DISABLED"):
            SitqPluginManager().backend_class(scheme)
    monkeypatch.delenv("SITQ_DISABLED_PLUGINS")
    monkeypatch.setenv("SITQ_LOAD_PLUGINS", "")
    with pytest.raises(PluginError, match="installed but disabled by SITQ_LOAD_PLUGINS"):
        SitqPluginManager().backend_class("sqlite")


def test_typo_in_hook_name_is_reported(site: Path) -> None:
    make_dist(
        site,
        "acme-typo",
        "typo",
        "acme_typo_plugin",
        """
        def sitq_register_backend(register):
            pass
        """,
    )
    record = {r.name: r for r in SitqPluginManager().plugin_records()}["typo"]
    assert record.status == "broken"
    assert "did you mean sitq_register_backends" in (record.error or "")


def test_observer_failures_are_isolated(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[str] = []

    class Good:
        @hookimpl
        def sitq_task_enqueued(self, task: object) -> None:
            seen.append("good")

    class Bad:
        @hookimpl
        def sitq_task_enqueued(self, task: object) -> None:
            raise RuntimeError("observer bug")

    class Async:
        @hookimpl
        async def sitq_task_enqueued(self, task: object) -> None:  # wrong: hooks are synchronous
            seen.append("never")

    manager = SitqPluginManager(load_entrypoints=False)
    assert not manager.has_observers("sitq_task_enqueued")
    for name, plugin in (("good", Good()), ("bad", Bad())):
        manager.register_plugin(plugin, name)
    manager.register(Async(), name="async")  # pluggy's own register() checks nothing: notify still copes
    assert manager.has_observers("sitq_task_enqueued")
    manager.notify("sitq_task_enqueued", task=object())
    assert seen == ["good"]
    assert "observer bug" in caplog.text
    assert "returned a coroutine" in caplog.text


def test_an_observer_failing_on_every_task_logs_one_traceback_then_a_count_a_minute(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sitq_core import hook_failures

    class Bad:
        @hookimpl
        def sitq_task_enqueued(self, task: object) -> None:
            raise RuntimeError("observer bug")

    clock = [1000.0]
    monkeypatch.setattr(hook_failures.time, "monotonic", lambda: clock[0])
    manager = SitqPluginManager(load_entrypoints=False)
    manager.register_plugin(Bad(), "bad")
    for _ in range(500):
        manager.notify("sitq_task_enqueued", task=object())
    failures = [r for r in caplog.records if "raised in sitq_task_enqueued" in r.getMessage()]
    assert len(failures) == 1 and failures[0].exc_info is not None  # one traceback, not 500
    clock[0] += 61
    manager.notify("sitq_task_enqueued", task=object())
    failures = [r for r in caplog.records if "raised in sitq_task_enqueued" in r.getMessage()]
    assert len(failures) == 2 and failures[1].exc_info is None
    assert "500 more time(s)" in failures[1].getMessage() and "RuntimeError: observer bug" in failures[1].getMessage()


def test_invalid_registration_names_are_refused(site: Path) -> None:
    make_dist(site, "acme-bad-name", "badname", "acme_badname_plugin", GOOD_BACKEND.format(name="Bad Name"))
    record = {r.name: r for r in SitqPluginManager().plugin_records()}["badname"]
    assert record.status == "broken" and "'Bad Name'" in (record.error or "")
    assert "(context:" not in (record.error or ""), "the refusal's text, not its keyword dump, in a listing's line"


def test_facade_without_the_sqlite_plugin_says_what_to_install() -> None:
    code = textwrap.dedent(
        """
        import sys
        sys.modules["sitq_sqlite"] = None  # as if sitq-sqlite were not importable
        import sitq
        try:
            from sitq import SQLiteBackend
        except ImportError as exc:
            print(type(exc).__name__, exc)
        else:
            raise SystemExit("no error")
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "MissingPluginError" in done.stdout
    assert "pip install sitq[sqlite]" in done.stdout  # as the contract writes it
    assert "pip install 'sitq[sqlite]'" in done.stdout  # and quoted, for shells that expand brackets
    assert "from a source checkout of sitq, in its folder: pip install ./sitq_sqlite" in done.stdout


def test_hook_sitq_register_backends() -> None:
    class Plugin:
        @hookimpl
        def sitq_register_backends(self, register: object) -> None:
            register("copycat", "sitq_dictstore.backend:DictStoreBackend", url_schemes=("copy",))  # type: ignore[operator]

    manager = SitqPluginManager()
    manager.register_plugin(Plugin(), "copycat-plugin")
    assert manager.backend_class("copycat").__name__ == "DictStoreBackend"
    assert manager.backend_class("copy") is manager.backend_class("copycat")
    assert "copycat" in {r.name: r for r in manager.plugin_records()}["copycat-plugin"].backends


def test_hook_sitq_register_serializers() -> None:
    from sitq_core.serializers import CloudpickleSerializer

    class Quiet(CloudpickleSerializer):
        name = "quiet"

    class Plugin:
        @hookimpl
        def sitq_register_serializers(self, register: object) -> None:
            register("quiet", Quiet)  # type: ignore[operator]

    manager = SitqPluginManager()
    manager.register_plugin(Plugin(), "quiet-plugin")
    assert manager.serializer_class("quiet") is Quiet


@pytest.mark.parametrize("own_name", ["json2", ""])
def test_a_serializer_chosen_by_name_writes_a_name_workers_can_look_up(own_name: str) -> None:
    """Selected as 'renamed', it stored its own class name on every task, which no worker could find."""
    from sitq_core.config import resolve_serializer
    from sitq_core.serializers import CloudpickleSerializer

    class Renamed(CloudpickleSerializer):
        name = own_name

    class Plugin:
        @hookimpl
        def sitq_register_serializers(self, register: object) -> None:
            register("renamed", Renamed)  # type: ignore[operator]
            register("pickled", CloudpickleSerializer)  # an alias of a registered serializer keeps its own name

    manager = get_plugin_manager()
    manager.register_plugin(Plugin(), "renamed-plugin")
    try:
        serializer = resolve_serializer("renamed")
        assert serializer.name == "renamed" and manager.serializer_class(serializer.name) is Renamed
        assert resolve_serializer("pickled").name == "cloudpickle"
    finally:
        manager.unregister_plugin("renamed-plugin")


def test_check_plugin_passes_the_example_and_finds_real_problems(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sitq_core.testing import check_plugin

    assert check_plugin("dictstore") == []
    make_dist(
        site,
        "acme-mixed",
        "mixed",
        "acme_mixed_plugin",
        """
        from sitq_core.hookspecs import hookimpl

        @hookimpl
        def sitq_register_serializers(register):
            register("msgpack", "sitq_core.serializers:MsgpackSerializer")
            register("ghost-format", "acme_mixed_plugin:Missing")
        """,
    )
    problems = check_plugin("mixed")
    assert any("name clash" in p and "serializer 'msgpack'" in p and "built into sitq-core" in p for p in problems)
    assert any("ghost-format" in p and "failed to import" in p for p in problems), problems
    make_dist(site, "acme-typo", "typo", "acme_typo_plugin", "def sitq_register_backend(register):\n    pass\n")
    monkeypatch.setenv("SITQ_STRICT_PLUGINS", "1")
    problems = check_plugin("typo")  # reported, not raised, in strict mode too
    assert any("sitq_register_backends" in p for p in problems), problems


def test_check_plugin_accepts_a_distribution_name_as_sitq_load_plugins_does(site: Path) -> None:
    from sitq_core.testing import check_plugin

    for name in ("sitq-dictstore", "sitq_dictstore", "SITQ.DictStore"):  # compared as PEP 503 normalises names
        assert check_plugin(name) == [], name
    source = """
        from sitq_core.hookspecs import hookimpl

        @hookimpl
        def sitq_register_backend(register):
            pass
        """
    make_dist(site, "acme-misspelt", "misspelt", "acme_misspelt_plugin", source)
    problems = check_plugin("acme-misspelt")
    assert problems and all(p.startswith("entry point misspelt (acme-misspelt): ") for p in problems), problems
    assert any("sitq_register_backend" in p for p in problems), problems
    [unknown] = check_plugin("acme-nothing")
    assert "no entry point or distribution named 'acme-nothing'" in unknown and "dictstore (sitq-dictstore)" in unknown


def test_without_the_testing_extra_the_kit_names_it() -> None:
    """check_plugin lives in the kit; without pytest installed the import error says which extra brings it."""
    code = "import sys; sys.modules['pytest'] = None; from sitq_core.testing import check_plugin"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("ModuleNotFoundError: sitq_core.testing needs pytest"), done.stderr
    assert "pip install 'sitq-core[testing]'" in last, done.stderr


def test_a_url_scheme_cannot_quietly_shadow_another_backend(site: Path) -> None:
    make_dist(
        site,
        "acme-scheme",
        "scheme",
        "acme_scheme_plugin",
        """
        from sitq_core.hookspecs import hookimpl

        @hookimpl
        def sitq_register_backends(register):
            register("aaa", "sitq_dictstore.backend:DictStoreBackend", url_schemes=("sqlite",))
        """,
    )
    manager = SitqPluginManager()
    with pytest.raises(PluginConflictError) as info:
        manager.backend_class("sqlite")
    assert "sitq-sqlite" in str(info.value) and "acme-scheme" in str(info.value)
    records = {r.name: r for r in manager.plugin_records()}
    assert records["scheme"].status == "conflict" and records["sqlite"].status == "conflict"


def test_a_conflict_ends_when_one_side_goes() -> None:
    class One:
        @hookimpl
        def sitq_register_serializers(self, register: Any) -> None:
            register("fancy", "sitq_core.serializers:CloudpickleSerializer")

    class Two:
        @hookimpl
        def sitq_register_serializers(self, register: Any) -> None:
            register("fancy", "sitq_core.serializers:CloudpickleSerializer")

    manager = SitqPluginManager(load_entrypoints=False)
    manager.register_plugin(One(), "one")
    manager.register_plugin(Two(), "two")
    assert {r.name: r.status for r in manager.plugin_records()} == {"one": "conflict", "two": "conflict"}
    manager.unregister_plugin("two")
    record = {r.name: r for r in manager.plugin_records()}["one"]
    assert (record.status, record.error) == ("ok", None)
    assert manager.serializer_class("fancy").__name__ == "CloudpickleSerializer"


def test_a_url_scheme_clash_names_the_scheme_not_a_false_double_registration(site: Path) -> None:
    make_dist(
        site,
        "acme-shadow",
        "shadow",
        "acme_shadow_plugin",
        """
        from sitq_core.hookspecs import hookimpl

        @hookimpl
        def sitq_register_backends(register):
            register("shadow", "sitq_dictstore.backend:DictStoreBackend", url_schemes=("dictstore",))
        """,
    )
    manager = SitqPluginManager()
    with pytest.raises(PluginConflictError) as info:
        manager.backend_class("dictstore")  # the contested key; 'shadow' itself answers to nothing else
    text = str(info.value)
    assert "both answer to 'dictstore'" in text and "'shadow' is registered by both" not in text, text
    assert "SITQ_DISABLED_PLUGINS=shadow" in text and "SITQ_DISABLED_PLUGINS=dictstore" in text
    assert manager.backend_class("shadow").__name__ == "DictStoreBackend"


def test_check_plugin_reports_clashes_in_strict_mode_beside_a_broken_plugin(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sitq_core.testing import check_plugin

    make_dist(
        site,
        "acme-usurper",
        "usurper",
        "acme_usurper_plugin",
        """
        from sitq_core.hookspecs import hookimpl

        @hookimpl
        def sitq_register_backends(register):
            register("dictstore", "sitq_dictstore.backend:DictStoreBackend")
        """,
    )
    make_dist(site, "acme-rotten", "rotten", "acme_rotten_plugin", "import no_such_dependency_xyz\n")
    monkeypatch.setenv("SITQ_STRICT_PLUGINS", "1")
    problems = check_plugin("dictstore")
    assert any("name clash" in p and "acme-usurper" in p for p in problems), problems


def test_a_doubly_provided_entry_point_obeys_the_plugin_switches(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = """
        from sitq_core.hookspecs import hookimpl

        @hookimpl
        def sitq_register_backends(register):
            register("twin", "sitq_dictstore.backend:DictStoreBackend")
        """
    make_dist(site, "acme-twin-a", "twin", "acme_twin_a", source)
    make_dist(site, "acme-twin-b", "twin", "acme_twin_b", source)
    monkeypatch.setenv("SITQ_STRICT_PLUGINS", "1")
    with pytest.raises(BrokenPluginError) as info:
        SitqPluginManager().ensure_loaded()
    assert "provided by both" in str(info.value) and "SITQ_DISABLED_PLUGINS=acme-twin-b keeps" in str(info.value)
    monkeypatch.setenv("SITQ_LOAD_PLUGINS", "dictstore")  # an unrelated duplicate no longer matters
    manager = SitqPluginManager()
    assert manager.backend_class("dictstore").__name__ == "DictStoreBackend"
    assert {r.name: r.status for r in manager.plugin_records()}["twin"] == "disabled"
    monkeypatch.setenv("SITQ_LOAD_PLUGINS", "acme-twin-b")  # choose one of the two by its distribution
    records = {r.name: r for r in SitqPluginManager().plugin_records()}
    assert (records["twin"].dist, records["twin"].status) == ("acme-twin-b", "ok")
    # the one passed over is still listed, as disabled (it vanished from `sitq plugins`)
    passed_over = records["twin (acme-twin-a)"]
    assert (passed_over.status, passed_over.disabled_by) == ("disabled", "SITQ_LOAD_PLUGINS")
    monkeypatch.delenv("SITQ_LOAD_PLUGINS")
    monkeypatch.setenv("SITQ_DISABLED_PLUGINS", "acme-twin-a")  # or the other one turned off by its distribution
    records = {r.name: r for r in SitqPluginManager().plugin_records()}
    assert (records["twin"].dist, records["twin"].status) == ("acme-twin-b", "ok")
    assert (records["twin (acme-twin-a)"].status, records["twin (acme-twin-a)"].disabled_by) == (
        "disabled",
        "SITQ_DISABLED_PLUGINS",
    )
    monkeypatch.setenv("SITQ_DISABLED_PLUGINS", "twin")
    assert {r.name: r.status for r in SitqPluginManager().plugin_records()}["twin"] == "disabled"


def test_a_plugin_registering_an_invalid_class_is_listed_broken_at_once(site: Path) -> None:
    make_dist(
        site,
        "acme-invalid",
        "invalid",
        "acme_invalid_plugin",
        """
        from sitq_core.hookspecs import hookimpl

        @hookimpl
        def sitq_register_backends(register):
            register("notabackend", dict)
            register("fine", "sitq_dictstore.backend:DictStoreBackend")
        """,
    )
    manager = SitqPluginManager()
    record = {r.name: r for r in manager.plugin_records()}["invalid"]
    assert record.status == "broken" and "not a subclass of Backend" in (record.error or ""), record
    with pytest.raises(BrokenPluginError, match="not a subclass of Backend"):
        manager.backend_class("notabackend")
    assert manager.backend_class("fine").__name__ == "DictStoreBackend"  # the plugin's other names still register


def test_the_backends_command_marks_a_broken_name_and_keeps_long_names_aligned(site: Path) -> None:
    import io

    from sitq_core.cli import main

    make_dist(
        site,
        "acme-invalid",
        "invalid",
        "acme_invalid_plugin_b",
        """
        from sitq_core.hookspecs import hookimpl

        @hookimpl
        def sitq_register_backends(register):
            register("notabackend", dict)
            register("a-rather-long-backend-name", "sitq_dictstore.backend:DictStoreBackend")
        """,
    )
    out = io.StringIO()
    assert main(["backends"], stdout=out) == 0
    lines = out.getvalue().splitlines()
    broken = next(line for line in lines if " notabackend " in line)
    assert "BROKEN, cannot be chosen" in broken and "not a subclass of Backend" in broken
    starts = {line.index("sitq-") for line in lines if "sitq-" in line and "acme" not in line}
    assert len(starts) == 1, out.getvalue()  # the distribution column lines up, long name or not


def test_star_import_works_without_an_optional_backend_plugin() -> None:
    code = textwrap.dedent(
        """
        import sys
        sys.modules["sitq_postgres"] = None  # as if sitq-postgres were not installed (the default install)
        from sitq import *
        print(TaskQueue.__name__, SQLiteBackend.__name__, "PostgresBackend" in dir())
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["TaskQueue", "SQLiteBackend", "False"], done.stdout + done.stderr


def test_star_import_works_with_a_broken_optional_backend_plugin(tmp_path: Path) -> None:
    shadow = tmp_path / "sitq_postgres"
    shadow.mkdir()
    (shadow / "__init__.py").write_text('raise ImportError("no asyncpg wheel for this Python")\n')
    code = textwrap.dedent(
        """
        from sitq import *
        print(TaskQueue.__name__, SQLiteBackend.__name__, "PostgresBackend" in dir())
        import sitq
        try:
            sitq.PostgresBackend
        except ImportError as exc:
            print("explained:", "failed to import" in str(exc) and "no asyncpg wheel" in str(exc))
        """
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert done.stdout.split() == ["TaskQueue", "SQLiteBackend", "False", "explained:", "True"], (
        done.stdout + done.stderr
    )


def test_threads_that_first_use_sitq_together_all_see_every_plugin(tmp_path: Path) -> None:
    from sitq import SyncTaskQueue

    import sitq_test_tasks as tasks

    barrier = threading.Barrier(6)
    outcomes: list[object] = []

    def first_use(n: int) -> None:
        barrier.wait(10)
        try:
            with SyncTaskQueue(f"sqlite:///{tmp_path / f'q{n}.db'}") as queue:  # resolves sqlite and cloudpickle
                outcomes.append(queue.enqueue(tasks.add, n))
        except Exception as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=first_use, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    errors = [outcome for outcome in outcomes if isinstance(outcome, Exception)]
    assert errors == [] and len(outcomes) == 6
    assert "sqlite" in get_plugin_manager().backends.names()  # and the process stays usable


def test_strict_mode_ends_with_the_broken_plugin_and_never_stops_observation_hooks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Broken:
        @hookimpl
        def sitq_register_backends(self, register: Any) -> None:
            raise RuntimeError("kaboom")

    monkeypatch.setenv("SITQ_STRICT_PLUGINS", "1")
    manager = SitqPluginManager()
    manager.register_plugin(Broken(), "broken-registration")
    with pytest.raises(BrokenPluginError, match="kaboom"):
        manager.collect()
    with pytest.raises(BrokenPluginError, match="kaboom"):  # strict stays strict for lookups
        manager.backend_class("sqlite")
    assert manager.has_observers("sitq_task_started") in (True, False)  # a worker's hooks must not raise
    manager.unregister_plugin("broken-registration")
    assert manager.backend_class("sqlite").__name__ == "SQLiteBackend", "strict mode outlived the broken plugin"


def test_a_broken_backend_named_by_sitq_backend_says_so_once_per_error(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The registry raises one cached error for a broken name: the variable's note piled up on it per call."""
    from sitq_core.config import resolve_backend
    from sitq_core.plugins import reset_plugin_manager

    make_dist(
        site,
        "acme-broken-env",
        "brokenenv",
        "acme_brokenenv_plugin",
        """
        from sitq_core.hookspecs import hookimpl

        @hookimpl
        def sitq_register_backends(register):
            register("brokenenv", dict)
        """,
    )
    reset_plugin_manager()
    monkeypatch.setenv("SITQ_BACKEND", "brokenenv://x")
    for _ in range(3):
        with pytest.raises(BrokenPluginError) as info:
            resolve_backend()
        assert str(info.value).count("(from the SITQ_BACKEND environment variable)") == 1, str(info.value)
    with pytest.raises(BrokenPluginError) as direct:
        resolve_backend("brokenenv://x")
    assert "SITQ_BACKEND" not in str(direct.value)


SERIALIZER_ONLY = """
from sitq_core.hookspecs import hookimpl

@hookimpl
def sitq_register_serializers(register):
    register("{name}", "sitq_core.serializers:CloudpickleSerializer", description="a copy")
"""


def test_a_disabled_plugin_is_not_claimed_to_provide_a_backend(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A disabled plugin is never imported, so what it provides is unknown: it is listed as a plugin, not a backend."""
    import io
    import json

    from sitq_core.cli import main

    make_dist(site, "acme-json", "acmejson", "acme_json_serializer_plugin", SERIALIZER_ONLY.format(name="acmejson"))
    make_dist(site, "acme-pair", "pairstore", "acme_pair_backend_plugin", GOOD_BACKEND.format(name="pairstore"))
    (site / "acme_pair-1.0.dist-info" / "entry_points.txt").write_text(  # one distribution, two entry points
        "[sitq]\npairstore = acme_pair_backend_plugin\npairjson = acme_pair_json_plugin\n"
    )
    (site / "acme_pair_json_plugin.py").write_text(textwrap.dedent(SERIALIZER_ONLY.format(name="pairjson")))
    monkeypatch.setenv("SITQ_DISABLED_PLUGINS", "acmejson,pairjson")
    out = io.StringIO()
    assert main(["backends"], stdout=out) == 0
    lines = out.getvalue().splitlines()
    for name in ("acmejson", "pairjson"):  # a disabled serializer plugin was shown as "backend NAME ..."
        mentions = [line for line in lines if f" {name} " in line]
        assert len(mentions) == 1, out.getvalue()
        assert mentions[0].split()[:2] == ["plugin", name], mentions[0]
        assert mentions[0].endswith(
            "installed but disabled by SITQ_DISABLED_PLUGINS: what it provides is not known until it is enabled"
        ), mentions[0]
    assert any(line.split()[:2] == ["backend", "pairstore"] for line in lines)  # its enabled sibling stays
    out = io.StringIO()
    main(["backends", "--json"], stdout=out)
    rows = {(row["kind"], row["name"]): row for row in json.loads(out.getvalue())}
    assert ("backend", "acmejson") not in rows and rows[("plugin", "acmejson")]["dist"] == "acme-json"
    manager = SitqPluginManager()
    for kind, lookup in (("backend", manager.backend_class), ("serializer", manager.serializer_class)):
        with pytest.raises(PluginError) as info:
            lookup("acmejson")
        message = info.value.message
        assert "is provided by" not in message, message  # not claimed as known
        assert message.startswith(
            f"{kind} 'acmejson' may be provided by the plugin 'acmejson' (acme-json 1.0), which is installed but "
            "disabled by SITQ_DISABLED_PLUGINS: what a disabled plugin provides is not known until it is enabled"
        ), message
    monkeypatch.delenv("SITQ_DISABLED_PLUGINS")
    with pytest.raises(UnknownBackendError, match="no backend named 'acmejson'"):  # enabled: it is no backend
        SitqPluginManager().backend_class("acmejson")


def test_an_unknown_name_mentions_the_disabled_plugins_that_might_provide_it(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_dist(site, "acme-json", "acmejson", "acme_json_serializer_plugin_b", SERIALIZER_ONLY.format(name="acmejson"))
    monkeypatch.setenv("SITQ_DISABLED_PLUGINS", "acmejson")
    with pytest.raises(UnknownBackendError) as info:
        SitqPluginManager().backend_class("nosuchstore")
    message = info.value.message
    assert message.startswith("no backend named 'nosuchstore'. Installed: dictstore, postgres, sqlite."), message
    assert (
        "Installed but disabled, so what they provide is not known until they are enabled: "
        "plugin 'acmejson' (acme-json 1.0)."
    ) in message, message
    monkeypatch.setenv("SITQ_DISABLED_PLUGINS", "postgres")  # sitq knows what sitq-postgres provides
    with pytest.raises(UnknownBackendError) as info:
        SitqPluginManager().backend_class("nosuchstore")
    assert "disabled" not in info.value.message, info.value.message
    monkeypatch.setenv("SITQ_LOAD_PLUGINS", "")  # everything off: the message names a few, not every plugin
    with pytest.raises(UnknownBackendError) as info:
        SitqPluginManager().backend_class("nosuchstore")
    message = info.value.message
    # 'dictstore' is close to the name asked for: told first as the plugin that may provide it, then the rest
    assert "The plugin 'dictstore' (sitq-dictstore 0.1.0) may provide it" in message, message
    assert "Also installed but disabled" in message and "plugin 'acmejson' (acme-json 1.0)." in message, message
    from sitq_core.plugin_manager import DISABLED_NAMED_IN_ERRORS as many

    for n in range(many):
        make_dist(site, f"acme-off{n}", f"off{n}", f"acme_off_plugin_{n}", "")
    with pytest.raises(UnknownBackendError) as info:
        SitqPluginManager().backend_class("nosuchstore")
    message = info.value.message
    assert message.endswith(f"plugin 'off{many - 2}' (acme-off{many - 2} 1.0) and 1 more (sitq plugins lists them)."), (
        message
    )


def test_a_plugin_that_failed_to_import_is_not_claimed_to_provide_a_backend(site: Path) -> None:
    make_dist(site, "acme-broken", "acme", "acme_broken_plugin5", "import no_such_dependency_xyz\n")
    manager = SitqPluginManager()
    with pytest.raises(BrokenPluginError) as info:
        manager.backend_class("acme")
    assert info.value.message.startswith(
        "backend 'acme' may come from the plugin 'acme' (acme-broken 1.0), which failed to load (what a plugin "
        "provides is not known until it loads): ModuleNotFoundError: No module named 'no_such_dependency_xyz'."
    ), info.value.message


def test_strict_mode_raises_the_same_broken_plugin_at_every_lookup(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two broken plugins, one found while loading and one while registering: every lookup names the same one."""
    make_dist(  # sorts first, but is found broken only when the registrations are collected
        site,
        "acme-aaa",
        "aaa",
        "aaa_registers_an_invalid_class",
        """
        from sitq_core.hookspecs import hookimpl

        @hookimpl
        def sitq_register_backends(register):
            register("aaa", dict)
        """,
    )
    make_dist(site, "acme-zzz", "zzz", "zzz_fails_to_import", "raise RuntimeError('zzz kaboom')\n")
    monkeypatch.setenv("SITQ_STRICT_PLUGINS", "1")

    def blamed(manager: SitqPluginManager, lookups: int) -> list[str]:
        names = []
        for _ in range(lookups):
            with pytest.raises(BrokenPluginError) as info:
                manager.backend_class("sqlite")
            names.append(info.value.value)
        return names

    first = blamed(SitqPluginManager(), 4)
    assert first == [first[0]] * 4, first  # was zzz, then aaa, then zzz again
    assert blamed(SitqPluginManager(), 2) == first[:2]  # and the same one in another process
    other_way_in = SitqPluginManager()
    with pytest.raises(BrokenPluginError) as info:
        other_way_in.ensure_loaded()  # a first use that only loads (a worker's observation hooks)
    assert [info.value.value, *blamed(other_way_in, 2)] == first[:3]


def test_an_unknown_name_suggests_and_lists_only_names_that_can_be_chosen(site: Path) -> None:
    """'sqlit' suggested 'sqlite' while sqlite was in a conflict, and broken names were listed as installed."""
    make_dist(site, "acme-hijack", "hijack", "acme_hijack_plugin", GOOD_BACKEND.format(name="sqlite"))
    make_dist(
        site,
        "acme-invalid",
        "invalid",
        "acme_invalid_plugin_c",
        """
        from sitq_core.hookspecs import hookimpl

        @hookimpl
        def sitq_register_backends(register):
            register("notabackend", dict)
            register("lazybad", "acme_no_such_module_xyz:Backend")
        """,
    )
    manager = SitqPluginManager()
    with pytest.raises(UnknownBackendError) as info:
        manager.backend_class("sqlit")
    message = info.value.message
    assert "Did you mean" not in message, message  # sqlite cannot be chosen: two plugins claim it
    assert message.startswith("no backend named 'sqlit'. Installed: dictstore, postgres."), message
    # lazybad's target is imported for the listing: broken from the first error on, not after a use of it
    assert "Installed but cannot be chosen: lazybad (broken), notabackend (broken), sqlite (conflict)." in message
    assert info.value.valid_options == ["dictstore", "postgres"]
    with pytest.raises(BrokenPluginError):
        manager.backend_class("lazybad")
    with pytest.raises(UnknownBackendError) as info:
        manager.backend_class("lazybd")
    message = info.value.message
    assert "Did you mean" not in message and "lazybad (broken)" in message, message
    assert info.value.valid_options == ["dictstore", "postgres"]
    with pytest.raises(UnknownBackendError) as info:
        manager.backend_class("postgresq")
    assert "Did you mean 'postgresql'?" in info.value.message  # a usable backend's URL scheme is still suggested


@pytest.mark.parametrize("name", ["Upper", "1st", "_private", "dotted.name", "with space", "newline\n", ""])
def test_names_follow_the_documented_rule(name: str) -> None:
    """plugins.md: lower case letters, digits, '_', '-' and '+', starting with a letter ('$' let a newline through)."""

    class Plugin:
        @hookimpl
        def sitq_register_serializers(self, register: Any) -> None:
            register("fine-name_2+x", "sitq_core.serializers:CloudpickleSerializer")
            register(name, "sitq_core.serializers:CloudpickleSerializer")

    manager = SitqPluginManager(load_entrypoints=False, strict=False)
    manager.register_plugin(Plugin(), "names")
    record = {r.name: r for r in manager.plugin_records()}["names"]
    assert record.status == "broken" and f"serializer name {name!r}" in (record.error or ""), record
    assert record.serializers == ["fine-name_2+x"]  # what it registered before the bad name stays


def test_of_two_distributions_with_one_entry_point_name_the_first_by_name_loads(
    site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not whichever importlib.metadata finds first (sys.path order, then a directory listing's order)."""
    source = GOOD_BACKEND.format(name="twin")
    make_dist(site, "Acme_Twin-B", "twin", "acme_twin_b_first_on_path", source)
    later = tmp_path / "later-site"
    later.mkdir()
    monkeypatch.syspath_prepend(str(later))
    monkeypatch.syspath_prepend(str(site))  # "site" comes before "later-site" on sys.path
    make_dist(later, "acme-twin-a", "twin", "acme_twin_a_later_on_path", source)
    records = {r.name: r for r in SitqPluginManager().plugin_records()}
    assert (records["twin"].dist, records["twin"].status) == ("acme-twin-a", "ok")
    loser = records["twin (Acme_Twin-B)"]
    assert loser.status == "broken"
    assert "provided by both acme-twin-a and Acme_Twin-B; only acme-twin-a was loaded" in (loser.error or "")


def _plugins_listing() -> list[str]:
    """The lines `sitq plugins` prints."""
    import io

    from sitq_core.cli import main

    out = io.StringIO()
    assert main(["plugins"], stdout=out) == 0
    return out.getvalue().splitlines()


def test_an_async_hook_is_a_broken_plugin_and_is_never_called(site: Path) -> None:
    """'async def sitq_register_backends' was listed ok, registered nothing, and left only a never-awaited warning."""
    import warnings

    from sitq_core.testing import check_plugin

    make_dist(
        site,
        "acme-async",
        "asynchook",
        "acme_async_hook_plugin",
        """
        from sitq_core import hookimpl

        @hookimpl
        async def sitq_register_backends(register):
            register("asynchook", "sitq_dictstore.backend:DictStoreBackend")

        @hookimpl
        async def sitq_task_enqueued(task):
            pass
        """,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        record = {r.name: r for r in SitqPluginManager().plugin_records()}["asynchook"]
        problems = check_plugin("asynchook")
    assert [str(w.message) for w in caught if "never awaited" in str(w.message)] == []
    assert record.status == "broken", record
    for hook in ("sitq_register_backends", "sitq_task_enqueued"):
        assert f"{hook} is 'async def'" in (record.error or ""), record.error
    assert "hooks must be plain (synchronous) functions" in (record.error or "")
    assert any("plugin is broken" in p and "plain (synchronous) functions" in p for p in problems), problems
    line = next(line for line in _plugins_listing() if line.startswith("asynchook "))
    assert "broken" in line and "'async def'" in line, line


def test_a_registration_hook_that_returns_its_names_is_a_broken_plugin(
    site: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """'return {"name": Cls}' was listed ok, check_plugin found nothing, and the name was unknown later."""
    from sitq_core.testing import check_plugin

    make_dist(
        site,
        "acme-returns",
        "returnonly",
        "acme_returns_plugin",
        """
        from sitq_core import hookimpl

        @hookimpl
        def sitq_register_backends(register):
            return {"returnonly": "sitq_dictstore.backend:DictStoreBackend"}
        """,
    )
    with caplog.at_level("WARNING", logger="sitq.plugins"):
        record = {r.name: r for r in SitqPluginManager().plugin_records()}["returnonly"]
    assert record.status == "broken", record
    assert "sitq_register_backends returned a dict" in (record.error or ""), record.error
    assert "call register(name, cls) for each backend; the return value is ignored" in (record.error or "")
    assert "returnonly" in caplog.text and "the return value is ignored" in caplog.text  # warned when loaded
    problems = check_plugin("returnonly")
    assert any("the return value is ignored" in p for p in problems), problems
    line = next(line for line in _plugins_listing() if line.startswith("returnonly "))
    assert "broken" in line and "the return value is ignored" in line, line


def test_a_hook_without_the_hookimpl_marker_says_to_decorate_it(site: Path) -> None:
    """'the plugin implements no sitq_* hook' (and 'ok' in sitq plugins) gave no hint at the missing decorator."""
    from sitq_core.testing import check_plugin

    make_dist(
        site,
        "acme-unmarked",
        "nohookimpl",
        "acme_unmarked_plugin",
        """
        def sitq_register_backends(register):
            register("nohookimpl", "sitq_dictstore.backend:DictStoreBackend")
        """,
    )
    record = {r.name: r for r in SitqPluginManager().plugin_records()}["nohookimpl"]
    assert record.status == "broken", record
    assert "sitq_register_backends is not marked as a hook" in (record.error or ""), record.error
    assert "decorate it with @sitq_core.hookimpl" in (record.error or "")
    problems = check_plugin("nohookimpl")
    assert any("decorate it with @sitq_core.hookimpl" in p for p in problems), problems
    line = next(line for line in _plugins_listing() if line.startswith("nohookimpl "))
    assert "broken" in line and "@sitq_core.hookimpl" in line, line


def test_an_unknown_name_lists_the_plugins_that_failed_to_load(site: Path) -> None:
    """A registration that failed partway left its later names unknown, and the error named every plugin but it."""
    make_dist(
        site,
        "acme-partial",
        "partial",
        "acme_partial_plugin",
        """
        from sitq_core import hookimpl

        @hookimpl
        def sitq_register_backends(register):
            register("partone", "sitq_dictstore.backend:DictStoreBackend")
            raise RuntimeError("config file missing")
            register("parttwo", "sitq_dictstore.backend:DictStoreBackend")
        """,
    )
    manager = SitqPluginManager()
    with pytest.raises(UnknownBackendError) as info:
        manager.backend_class("parttwo")
    message = info.value.message
    assert message.startswith("no backend named 'parttwo'. Installed: dictstore, partone, postgres, sqlite."), message
    assert (
        "These plugins failed to load, so what they provide may be missing: plugin 'partial' (acme-partial 1.0): "
        "registration failed: RuntimeError: config file missing."
    ) in message, message
    with pytest.raises(UnknownBackendError) as info:  # serializers too
        manager.serializer_class("nosuchformat")
    assert "plugin 'partial' (acme-partial 1.0)" in info.value.message, info.value.message
    manager.unregister_plugin("partial")
    with pytest.raises(UnknownBackendError) as info:  # nothing broken: nothing said
        manager.backend_class("parttwo")
    assert "failed to load" not in info.value.message, info.value.message


def test_the_traceback_hint_names_the_broken_plugin_it_is_about(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With two broken plugins, 'set SITQ_STRICT_PLUGINS=1 for the traceback' under B's error raised A's."""
    make_dist(site, "acme-aaa", "aaa", "aaa_fails_first", "raise RuntimeError('aaa kaboom')\n")
    make_dist(site, "acme-bbb", "bbb", "bbb_fails_second", "raise RuntimeError('bbb kaboom')\n")
    with pytest.raises(BrokenPluginError) as info:
        SitqPluginManager().backend_class("bbb")
    message = info.value.message
    assert "bbb kaboom" in message and "Set SITQ_STRICT_PLUGINS=1 for the traceback" not in message, message
    assert message.endswith(
        "For its traceback: SITQ_LOAD_PLUGINS=bbb SITQ_STRICT_PLUGINS=1, or SITQ_LOG_LEVEL=DEBUG sitq plugins."
    ), message
    monkeypatch.setenv("SITQ_LOAD_PLUGINS", "bbb")  # doing what the hint says raises bbb's error, with its cause
    monkeypatch.setenv("SITQ_STRICT_PLUGINS", "1")
    with pytest.raises(BrokenPluginError) as info:
        SitqPluginManager().backend_class("bbb")
    assert info.value.value == "bbb" and isinstance(info.value.cause, RuntimeError), info.value
    assert str(info.value.cause) == "bbb kaboom"


def test_an_entry_point_name_shadowed_by_another_distribution_says_so(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sitq-aaa-sqlite's 'sqlite' entry point loads, not sitq-sqlite's: the error said reinstall, see traceback."""
    make_dist(site, "sitq-aaa-sqlite", "sqlite", "sitq_aaa_sqlite_plugin", "")
    with pytest.raises(BrokenPluginError) as info:
        SitqPluginManager().backend_class("sqlite")
    message = info.value.message
    assert "Reinstall" not in message and "traceback" not in message, message
    assert message.startswith(
        "backend 'sqlite' comes from sitq-sqlite 0.1.0, which was not loaded: its entry point 'sqlite' is also "
        "provided by sitq-aaa-sqlite 1.0, which was loaded instead"
    ), message
    assert "SITQ_DISABLED_PLUGINS=sitq-aaa-sqlite" in message, message
    monkeypatch.setenv("SITQ_DISABLED_PLUGINS", "sitq-aaa-sqlite")  # what the message suggests works
    assert SitqPluginManager().backend_class("sqlite").__name__ == "SQLiteBackend"


def test_the_plugins_command_shows_a_multi_line_error_on_one_line(site: Path) -> None:
    """pluggy's three-line PluginValidationError was pasted into the one-line status column."""
    from sitq_core.testing import check_plugin

    make_dist(
        site,
        "acme-wrongarg",
        "wrongarg",
        "acme_wrongarg_plugin",
        """
        from sitq_core import hookimpl

        @hookimpl
        def sitq_register_backends(reg):
            reg("wrongarg", "sitq_dictstore.backend:DictStoreBackend")
        """,
    )
    lines = _plugins_listing()
    at = next(i for i, line in enumerate(lines) if line.startswith("wrongarg "))
    assert "broken: PluginValidationError: Plugin 'wrongarg' for hook 'sitq_register_backends'; " in lines[at]
    assert lines[at].endswith("Argument(s) {'reg'} are declared in the hookimpl but can not be found in the hookspec")
    assert not any(line.startswith(("hookimpl definition", "Argument(s)")) for line in lines), lines
    problems = check_plugin("wrongarg")  # the full text stays where there is room for it
    assert any("\nhookimpl definition: sitq_register_backends(reg)\n" in p for p in problems), problems


def test_a_registration_hook_that_registers_and_also_returns_its_names_only_warns(
    site: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Returning the names it had registered marked a working plugin broken: strict mode refused its backend."""
    from sitq_core.testing import check_plugin

    make_dist(
        site,
        "acme-habit",
        "habit",
        "acme_habit_plugin",
        """
        from sitq_core import hookimpl

        @hookimpl
        def sitq_register_backends(register):
            register("habit", "sitq_dictstore.backend:DictStoreBackend")
            return ["habit"]
        """,
    )
    monkeypatch.setenv("SITQ_STRICT_PLUGINS", "1")
    manager = SitqPluginManager()
    with caplog.at_level("WARNING", logger="sitq.plugins"):
        assert manager.backend_class("habit").__name__ == "DictStoreBackend"  # strict mode raises for broken only
    record = {r.name: r for r in manager.plugin_records()}["habit"]
    assert record.status == "ok" and record.error is None, record
    assert record.backends == ["habit"]
    assert record.warnings == [
        "sitq_register_backends returned a list, which is ignored: what it registered with register(name, cls) "
        "is used; return None"
    ], record.warnings
    assert "habit" in caplog.text and "returned a list, which is ignored" in caplog.text
    assert record.as_dict()["warnings"] == record.warnings
    problems = check_plugin("habit")
    assert f"warning: {record.warnings[0]}" in problems, problems
    assert not any("broken" in p for p in problems), problems
    lines = _plugins_listing()
    at = next(i for i, line in enumerate(lines) if line.startswith("habit "))
    assert lines[at].split()[-1] == "ok", lines[at]
    assert lines[at + 2].split(None, 1) == ["warning:", record.warnings[0]], lines


def test_a_registration_hook_returning_an_empty_list_with_nothing_to_register_only_warns() -> None:
    """A hook that registers only when an optional dependency is there returns [] without it: nothing was lost."""

    class Plugin:
        @hookimpl
        def sitq_register_serializers(self, register: object) -> list[str]:
            return []

    manager = SitqPluginManager(strict=True)
    manager.register_plugin(Plugin(), "nothing-today")
    record = {r.name: r for r in manager.plugin_records()}["nothing-today"]
    assert record.status == "ok", record
    assert [w.split(",")[0] for w in record.warnings] == ["sitq_register_serializers returned a list"]


def test_a_class_plugin_inheriting_unmarked_no_op_hooks_from_a_base_class_is_ok() -> None:
    """A library base class's no-op sitq_* defaults marked every subclass broken: 'sitq_task_started is not marked'."""
    seen: list[str] = []

    class ObserverBase:  # a library's convenience base: no-op defaults, subclasses mark what they use
        def sitq_task_started(self, task: object, attempt: int, worker_id: str) -> None:
            pass

        def sitq_task_failed(self, task: object, error: object, will_retry: bool) -> None:
            pass

    class Metrics(ObserverBase):
        @hookimpl
        def sitq_task_failed(self, task: object, error: object, will_retry: bool) -> None:
            seen.append("failed")

    manager = SitqPluginManager(strict=True)
    manager.register_plugin(Metrics(), "metrics")
    manager.register_plugin(Metrics, "metrics-class")
    manager.check_hooks()
    records = {r.name: r for r in manager.plugin_records()}
    for name in ("metrics", "metrics-class"):
        assert records[name].status == "ok" and records[name].error is None, records[name]
        assert records[name].warnings == [], records[name]
        assert records[name].hooks == ["sitq_task_failed"]
    manager.unregister_plugin("metrics-class")
    manager.notify("sitq_task_failed", task=None, error="boom", will_retry=False)
    assert seen == ["failed"]


def test_an_unmarked_hook_beside_working_ones_is_a_warning_and_alone_is_broken(site: Path) -> None:
    """A plugin whose other hooks work still works; one whose only hook lacks the marker does nothing at all."""
    from sitq_core.testing import check_plugin

    make_dist(
        site,
        "acme-halfmarked",
        "halfmarked",
        "acme_halfmarked_plugin",
        """
        from sitq_core import hookimpl

        @hookimpl
        def sitq_register_backends(register):
            register("halfmarked", "sitq_dictstore.backend:DictStoreBackend")

        def sitq_task_started(task, attempt, worker_id):
            pass
        """,
    )

    class OwnUnmarked:  # defined on the class itself, not inherited: looked at
        @hookimpl
        def sitq_task_failed(self, task: object, error: object, will_retry: bool) -> None:
            pass

        def sitq_task_started(self, task: object, attempt: int, worker_id: str) -> None:
            pass

    manager = SitqPluginManager(strict=True)
    assert manager.backend_class("halfmarked").__name__ == "DictStoreBackend"
    manager.register_plugin(OwnUnmarked(), "own")
    manager.check_hooks()
    records = {r.name: r for r in manager.plugin_records()}
    for name in ("halfmarked", "own"):
        assert records[name].status == "ok", records[name]
        assert [w.split(",")[0] for w in records[name].warnings] == ["sitq_task_started is not marked as a hook"], (
            records[name].warnings
        )
    problems = check_plugin("halfmarked")
    assert any(p.startswith("warning: sitq_task_started is not marked as a hook") for p in problems), problems
    assert not any("broken" in p for p in problems), problems

    class OnlyUnmarked:  # does nothing at all: still broken, as is the module case (test_a_hook_without_...)
        def sitq_task_failed(self, task: object, error: object, will_retry: bool) -> None:
            pass

    lenient = SitqPluginManager(strict=False)
    with pytest.raises(BrokenPluginError, match="sitq_task_failed is not marked as a hook"):  # refused in code
        lenient.register_plugin(OnlyUnmarked(), "only")
    assert "only" not in {r.name for r in lenient.plugin_records()}


def test_an_async_hook_on_a_class_plugin_still_marks_it_broken() -> None:
    class Plugin:
        @hookimpl
        def sitq_task_failed(self, task: object, error: object, will_retry: bool) -> None:
            pass

        @hookimpl
        async def sitq_task_started(self, task: object, attempt: int, worker_id: str) -> None:
            pass

    manager = SitqPluginManager(strict=False)
    with pytest.raises(BrokenPluginError, match="sitq_task_started is 'async def'"):  # refused in code, at once
        manager.register_plugin(Plugin(), "half-async")
    assert manager.get_plugin("half-async") is None and "half-async" not in manager.records


def test_a_plugin_registered_in_code_is_not_said_to_come_from_none(caplog: pytest.LogCaptureFixture) -> None:
    """'sitq plugin 'p' from None failed to load': register_plugin gives no distribution."""

    class Plugin:
        @hookimpl
        async def sitq_task_started(self, task: object, attempt: int, worker_id: str) -> None:
            pass

    manager = SitqPluginManager(strict=True)
    with pytest.raises(BrokenPluginError) as info:
        manager.register_plugin(Plugin(), "p")
    assert str(info.value).startswith("sitq plugin 'p' (registered in code) was refused: "), str(info.value)
    assert "None" not in str(info.value)

    class One:
        @hookimpl
        def sitq_register_serializers(self, register: Any) -> None:
            register("clashing", "sitq_core.serializers:CloudpickleSerializer")

    class Two(One):
        pass

    lenient = SitqPluginManager(strict=False)
    lenient.register_plugin(One(), "one")
    lenient.register_plugin(Two(), "two")
    with caplog.at_level("WARNING", logger="sitq.plugins"):
        assert {r.name: r.status for r in lenient.plugin_records()}["two"] == "conflict"
    assert "(None)" not in caplog.text and "sitq plugin two" in caplog.text, caplog.text


def test_an_optional_hook_of_a_newer_sitq_is_honoured(site: Path, caplog: pytest.LogCaptureFixture) -> None:
    """pluggy's optionalhook=True lets one plugin work across sitq versions; it was an 'unknown hook', broken."""
    from sitq_core.testing import check_plugin

    make_dist(
        site,
        "acme-future",
        "future",
        "acme_future_plugin",
        """
        from sitq_core import hookimpl

        @hookimpl(optionalhook=True)
        def sitq_task_requeued(task):
            pass

        @hookimpl
        def sitq_register_backends(register):
            register("future", "sitq_dictstore.backend:DictStoreBackend")
        """,
    )
    with caplog.at_level("DEBUG", logger="sitq.plugins"):
        manager = SitqPluginManager(strict=True)
        assert manager.backend_class("future").__name__ == "DictStoreBackend"
    record = {r.name: r for r in manager.plugin_records()}["future"]
    assert record.status == "ok" and record.error is None and record.warnings == [], record
    assert record.hooks == ["sitq_register_backends"]  # this sitq never calls the other one
    assert "optional hook sitq_task_requeued" in caplog.text, caplog.text
    problems = check_plugin("future")  # (its class is dictstore's, whose name attribute differs: said, not broken)
    assert not any("broken" in p or "hook" in p or "warning" in p for p in problems), problems
    make_dist(  # without optionalhook, an unknown marked hook is still a mistake (a typo, usually)
        site,
        "acme-typo-marked",
        "typomarked",
        "acme_typo_marked_plugin",
        """
        from sitq_core import hookimpl

        @hookimpl
        def sitq_task_requeued(task):
            pass
        """,
    )
    typo = {r.name: r for r in SitqPluginManager(strict=False).plugin_records()}["typomarked"]
    assert typo.status == "broken" and "unknown hook sitq_task_requeued" in (typo.error or ""), typo


def test_a_hook_with_specname_is_checked_under_its_spec_name(site: Path) -> None:
    """An impl named sitq_register_serializers_v2 with specname= was an 'unknown hook', broken."""
    from sitq_core.testing import check_plugin

    make_dist(
        site,
        "acme-alias",
        "alias",
        "acme_alias_plugin",
        """
        from sitq_core import hookimpl

        @hookimpl(specname="sitq_register_backends")
        def sitq_register_backends_v2(register):
            register("alias", "sitq_dictstore.backend:DictStoreBackend")
        """,
    )
    make_dist(  # validated under its spec name: a wrong parameter name is still found
        site,
        "acme-alias-wrong",
        "aliaswrong",
        "acme_alias_wrong_plugin",
        """
        from sitq_core import hookimpl

        @hookimpl(specname="sitq_register_backends")
        def sitq_register_backends_v2(reg):
            reg("aliaswrong", "sitq_dictstore.backend:DictStoreBackend")
        """,
    )
    manager = SitqPluginManager(strict=False)
    assert manager.backend_class("alias").__name__ == "DictStoreBackend"
    records = {r.name: r for r in manager.plugin_records()}
    assert records["alias"].status == "ok" and records["alias"].error is None, records["alias"]
    assert records["alias"].hooks == ["sitq_register_backends"]
    problems = check_plugin("alias")  # (its class is dictstore's, whose name attribute differs: said, not broken)
    assert not any("broken" in p or "hook" in p or "warning" in p for p in problems), problems
    wrong = records["aliaswrong"]
    assert wrong.status == "broken" and "Argument(s) {'reg'} are declared in the hookimpl" in (wrong.error or "")


def test_one_plugin_registering_one_name_twice_is_a_plugin_problem(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """register("x", A) then register("x", B) was accepted without a word: the first won, listed twice."""
    from sitq_core.testing import check_plugin

    make_dist(
        site,
        "acme-twice",
        "twice",
        "acme_twice_plugin",
        """
        from sitq_core.hookspecs import hookimpl

        @hookimpl
        def sitq_register_backends(register):
            register("twice", "sitq_dictstore.backend:DictStoreBackend")
            register("twice", "sitq_sqlite.backend:SQLiteBackend")
            register("same", "sitq_dictstore.backend:DictStoreBackend")
            register("same", "sitq_dictstore.backend:DictStoreBackend")
        """,
    )
    message = (
        "backend 'twice' is registered twice by this plugin, as 'sitq_dictstore.backend:DictStoreBackend' and "
        "then as 'sitq_sqlite.backend:SQLiteBackend'; the first is used: register each name once"
    )
    manager = SitqPluginManager()
    record = {r.name: r for r in manager.plugin_records()}["twice"]
    assert record.status == "broken" and message in (record.error or ""), record
    assert sorted(record.backends) == ["same", "twice"]  # each name listed once
    assert any("backend 'same' is registered twice by this plugin" in w for w in record.warnings), record.warnings
    assert manager.backend_class("twice").__name__ == "DictStoreBackend"  # what worked still works
    listing = "\n".join(_plugins_listing())
    assert "provides: backend same, backend twice\n" in listing + "\n", listing
    problems = check_plugin("twice")
    assert any(message in p for p in problems) and any("'same' is registered twice" in p for p in problems), problems
    monkeypatch.setenv("SITQ_STRICT_PLUGINS", "1")
    with pytest.raises(BrokenPluginError, match="registered twice by this plugin"):
        SitqPluginManager().backend_class("twice")


def test_one_plugin_registering_one_target_twice_differently_names_what_differs(site: Path) -> None:
    """The same target with other url_schemes (or description) was 'the same way', the second schemes dropped."""
    from sitq_core.testing import check_plugin

    make_dist(
        site,
        "acme-twicediff",
        "twicediff",
        "acme_twicediff_plugin",
        """
        from sitq_core.hookspecs import hookimpl

        @hookimpl
        def sitq_register_backends(register):
            register("inner", "sitq_dictstore.backend:DictStoreBackend", url_schemes=("inr",))
            register("inner", "sitq_dictstore.backend:DictStoreBackend", url_schemes=("innr",))
            register("told", "sitq_dictstore.backend:DictStoreBackend", description="one")
            register("told", "sitq_dictstore.backend:DictStoreBackend", description="two")
            register("same", "sitq_dictstore.backend:DictStoreBackend", url_schemes=("sa", "sb"))
            register("same", "sitq_dictstore.backend:DictStoreBackend", url_schemes=("sb", "sa"))
        """,
    )
    manager = SitqPluginManager(strict=False)
    record = {r.name: r for r in manager.plugin_records()}["twicediff"]
    schemes = (
        "backend 'inner' is registered twice by this plugin, with url_schemes ('inr',) and then ('innr',); "
        "the first is used: register each name once"
    )
    described = (
        "backend 'told' is registered twice by this plugin, with description 'one' and then 'two'; "
        "the first is used: register each name once"
    )
    assert record.status == "broken", record
    assert schemes in (record.error or "") and described in (record.error or ""), record.error
    assert "'same'" not in (record.error or "")  # the same schemes in another order are the same registration
    assert any("backend 'same' is registered twice by this plugin, the same way" in w for w in record.warnings)
    problems = check_plugin("twicediff")
    assert any(schemes in p for p in problems), problems


def test_a_conflict_between_two_entry_points_of_one_distribution_names_the_entry_points(site: Path) -> None:
    """It said "registered by both acme-pair 1.0 and acme-pair 1.0. Uninstall one, ..."."""
    make_dist(site, "acme-pair", "left", "acme_pair_left", GOOD_BACKEND.format(name="pair"))
    with (site / "acme_pair-1.0.dist-info" / "entry_points.txt").open("a") as points:
        points.write("right = acme_pair_right\n")
    (site / "acme_pair_right.py").write_text(textwrap.dedent(GOOD_BACKEND.format(name="pair")))
    with pytest.raises(PluginConflictError) as info:
        SitqPluginManager().backend_class("pair")
    text = str(info.value)
    assert "backend 'pair' is registered by both entry points 'left' and 'right' of acme-pair 1.0" in text, text
    assert "Uninstall" not in text and "SITQ_DISABLED_PLUGINS=left or SITQ_DISABLED_PLUGINS=right" in text, text


def test_a_url_scheme_clash_is_listed_once_per_plugin(site: Path) -> None:
    """`sitq plugins` printed the clash twice on one line, once from each side."""
    make_dist(
        site,
        "acme-shadow",
        "shadow",
        "acme_shadow_plugin_c",
        """
        from sitq_core.hookspecs import hookimpl

        @hookimpl
        def sitq_register_backends(register):
            register("shadow", "sitq_dictstore.backend:DictStoreBackend", url_schemes=("dictstore",))
        """,
    )
    lines = [line for line in _plugins_listing() if "both answer to 'dictstore'" in line]
    assert len(lines) == 2, lines  # the line of each plugin
    assert all(line.count("both answer to") == 1 for line in lines), lines


def test_a_backend_whose_module_fails_at_import_says_how_to_see_the_traceback(site: Path) -> None:
    """plugins.md promises the hint when the plugin's own code raised; from the CLI there was no way to see it."""
    make_dist(
        site,
        "acme-crashy",
        "crashy",
        "acme_crashy_plugin",
        """
        from sitq_core.hookspecs import hookimpl

        @hookimpl
        def sitq_register_backends(register):
            register("crashy", "acme_crashy_target:CrashyBackend")
        """,
    )
    (site / "acme_crashy_target.py").write_text("def helper():\n    raise RuntimeError('boom at import')\n\nhelper()\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    command = [sys.executable, "-m", "sitq", "stats", "-b", "crashy://"]
    plain = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60, check=False)
    assert plain.returncode == 2 and "RuntimeError: boom at import" in plain.stderr, plain.stderr
    assert "For its traceback: SITQ_LOG_LEVEL=DEBUG" in plain.stderr and "Traceback" not in plain.stderr, plain.stderr
    debug = subprocess.run(
        command, capture_output=True, text=True, env={**env, "SITQ_LOG_LEVEL": "DEBUG"}, timeout=60, check=False
    )
    assert "Traceback" in debug.stderr and "in helper" in debug.stderr, debug.stderr


def test_check_plugin_gives_the_hook_name_hint_sitq_plugins_gives(site: Path) -> None:
    """A marked hook with a typo: check_plugin quoted pluggy's error without 'did you mean'."""
    from sitq_core.testing import check_plugin

    source = """
        from sitq_core.hookspecs import hookimpl

        @hookimpl
        def sitq_register_backend(register):
            pass
        """
    make_dist(site, "acme-marked-typo", "markedtypo", "acme_marked_typo_plugin", source)
    problems = check_plugin("markedtypo")
    assert any("unknown hook sitq_register_backend; did you mean sitq_register_backends?" in p for p in problems), (
        problems
    )


def test_an_import_string_without_a_colon_is_refused_at_registration(site: Path) -> None:
    """'no colon here' was listed ok and failed on use as ModuleNotFoundError."""
    from sitq_core.testing import check_plugin

    source = """
        from sitq_core.hookspecs import hookimpl

        @hookimpl
        def sitq_register_backends(register):
            register("colonless", "no colon here")
        """
    make_dist(site, "acme-colonless", "colonless", "acme_colonless_plugin", source)
    record = {r.name: r for r in SitqPluginManager().plugin_records()}["colonless"]
    assert record.status == "broken", record
    assert "import string 'module:Class'" in (record.error or "") and "'no colon here'" in (record.error or ""), record
    assert any("'no colon here'" in p for p in check_plugin("colonless"))


def test_an_import_string_of_non_ascii_identifiers_is_accepted(site: Path) -> None:
    """'été.backend:Backend' is a valid Python import path; an ASCII-only pattern refused it as malformed."""
    (site / "ete_backends").mkdir()
    (site / "ete_backends" / "__init__.py").write_text("", encoding="utf-8")
    (site / "ete_backends" / "été.py").write_text(
        "from sitq_sqlite import SQLiteBackend\n\nclass Dépôt(SQLiteBackend):\n    pass\n", encoding="utf-8"
    )
    source = """
        from sitq_core.hookspecs import hookimpl

        @hookimpl
        def sitq_register_backends(register):
            register("depot", "ete_backends.été:Dépôt")
        """
    make_dist(site, "acme-ete", "ete", "acme_ete_plugin", source)
    manager = SitqPluginManager()
    record = {r.name: r for r in manager.plugin_records()}["ete"]
    assert record.status == "ok", record
    assert manager.backend_class("depot").__name__ == "Dépôt"


def test_check_plugin_warns_about_an_init_parameter_called_name(site: Path) -> None:
    from sitq_core.testing import check_plugin

    source = """
        from sitq_core.hookspecs import hookimpl
        from sitq_dictstore.backend import DictStoreBackend

        class Named(DictStoreBackend):
            name = "named"

            def __init__(self, name: str = "x", **options):
                super().__init__(**options)

        @hookimpl
        def sitq_register_backends(register):
            register("named", Named)
        """
    make_dist(site, "acme-named", "named", "acme_named_plugin", source)
    problems = check_plugin("named")
    assert problems == [
        "warning: backend 'named': __init__ takes a parameter called 'name'; stored as self.name it shadows "
        "Backend.name (the registry name sitq reads from the instance): call it store, path or database_name"
    ], problems


class _SqliteSchemeThief:
    """An in-process plugin whose extra URL scheme is sitq-sqlite's ``sqlite+aiosqlite``."""

    @hookimpl
    def sitq_register_backends(self, register: Any) -> None:
        register("mine", "sitq_dictstore.backend:DictStoreBackend", url_schemes=("sqlite+aiosqlite", "mine+x"))


def test_a_url_scheme_clash_refuses_only_the_contested_scheme(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Both backends were unusable by every name, the default sitq.connect() too, over one shared extra scheme."""
    import sitq
    from sitq_core.plugins import use_plugin_manager

    monkeypatch.delenv("SITQ_BACKEND", raising=False)
    monkeypatch.chdir(tmp_path)
    manager = SitqPluginManager()
    manager.register_plugin(_SqliteSchemeThief(), "mine")
    with pytest.raises(PluginConflictError) as info:
        manager.backend_class("sqlite+aiosqlite")
    text = str(info.value)
    assert "backend 'sqlite' of sitq-sqlite" in text and "backend 'mine' of plugin 'mine'" in text, text
    assert "both answer to 'sqlite+aiosqlite'" in text, text
    assert manager.backend_class("sqlite").__name__ == "SQLiteBackend"
    assert manager.backend_class("mine").__name__ == "DictStoreBackend"
    assert manager.backend_class("mine+x").__name__ == "DictStoreBackend"
    assert {"mine", "sqlite"} <= set(manager.backends.usable_names())
    with use_plugin_manager(manager):
        assert type(sitq.connect().backend).__name__ == "SQLiteBackend"
        assert type(sitq.connect(f"sqlite:///{tmp_path / 'x.db'}").backend).__name__ == "SQLiteBackend"
        assert type(sitq.connect("mine://").backend).__name__ == "DictStoreBackend"
        with pytest.raises(PluginConflictError):
            sitq.connect(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    records = {r.name: r for r in manager.plugin_records()}
    assert records["mine"].status == "conflict" and records["sqlite"].status == "conflict"  # still to be settled


def test_conflict_advice_for_a_plugin_registered_in_code_does_not_offer_sitq_disabled_plugins() -> None:
    """SITQ_DISABLED_PLUGINS only affects entry points: for a plugin registered in code it was useless advice."""
    manager = SitqPluginManager()
    manager.register_plugin(_SqliteSchemeThief(), "mine")
    with pytest.raises(PluginConflictError) as info:
        manager.backend_class("sqlite+aiosqlite")
    text = str(info.value)
    assert "SITQ_DISABLED_PLUGINS=mine" not in text, text
    assert "SITQ_DISABLED_PLUGINS=sqlite" in text and "unregister_plugin('mine')" in text, text


def test_two_plugins_registering_one_name_keep_their_own_url_schemes() -> None:
    """Of a name two plugins register, only the name is ambiguous: each one's own scheme leads to its own class."""

    class One:
        @hookimpl
        def sitq_register_backends(self, register: Any) -> None:
            register("twin", "sitq_dictstore.backend:DictStoreBackend", url_schemes=("twin+one", "twin+both"))

    class Two:
        @hookimpl
        def sitq_register_backends(self, register: Any) -> None:
            register("twin", "sitq_sqlite.backend:SQLiteBackend", url_schemes=("twin+two", "twin+both"))

    manager = SitqPluginManager(load_entrypoints=False)
    manager.register_plugin(One(), "one")
    manager.register_plugin(Two(), "two")
    for contested in ("twin", "twin+both"):
        with pytest.raises(PluginConflictError) as info:
            manager.backend_class(contested)
        assert "plugin 'one'" in str(info.value) and "plugin 'two'" in str(info.value), str(info.value)
    assert manager.backend_class("twin+one").__name__ == "DictStoreBackend"
    assert manager.backend_class("twin+two").__name__ == "SQLiteBackend"
    assert "twin" not in manager.backends.usable_names()
    records = {r.name: r for r in manager.plugin_records()}
    assert records["one"].status == records["two"].status == "conflict"


def test_the_backends_command_refuses_only_a_contested_scheme(site: Path) -> None:
    """A clash over sitq-sqlite's extra scheme listed 'sqlite' itself as CONFLICT, cannot be chosen."""
    import io
    import json

    from sitq_core.cli import main
    from sitq_core.plugins import use_plugin_manager

    manager = SitqPluginManager()
    manager.register_plugin(_SqliteSchemeThief(), "mine")
    with use_plugin_manager(manager):
        out = io.StringIO()
        assert main(["backends", "--json"], stdout=out) == 0
        text = io.StringIO()
        assert main(["backends"], stdout=text) == 0
    lines = text.getvalue().splitlines()
    at = next(i for i, line in enumerate(lines) if line.split()[:2] == ["backend", "sqlite"])
    assert "CONFLICT" not in lines[at], lines[at]
    assert lines[at + 1].strip().startswith("URL scheme sqlite+aiosqlite: CONFLICT, cannot be chosen: "), lines
    assert any(line.strip() == "also as URL schemes: mine+x" for line in lines), lines
    rows = {row["name"]: row for row in json.loads(out.getvalue())}
    for name in ("sqlite", "mine"):
        assert rows[name]["conflict"] is False and "CONFLICT" not in rows[name]["description"], rows[name]
        assert rows[name]["conflicting_schemes"] == ["sqlite+aiosqlite"], rows[name]
    assert rows["postgres"]["conflicting_schemes"] == []


def test_a_misspelt_register_keyword_names_it_and_the_accepted_ones(site: Path) -> None:
    """It said 'SitqPluginManager._collect.<locals>.register_backend() got an unexpected keyword argument'."""
    make_dist(
        site,
        "acme-wrongkw",
        "wrongkw",
        "acme_wrongkw_plugin",
        """
        from sitq_core.hookspecs import hookimpl

        @hookimpl
        def sitq_register_backends(register):
            register("wrongkw", "sitq_dictstore.backend:DictStoreBackend", url_scheme="wk")
        """,
    )
    make_dist(
        site,
        "acme-wrongkw-ser",
        "wrongkwser",
        "acme_wrongkwser_plugin",
        """
        from sitq_core.hookspecs import hookimpl

        @hookimpl
        def sitq_register_serializers(register):
            register("wrongkw-json", "sitq_core.serializers:CloudpickleSerializer", descripton="typo")
        """,
    )
    records = {r.name: r for r in SitqPluginManager().plugin_records()}
    error = records["wrongkw"].error or ""
    assert records["wrongkw"].status == "broken", records["wrongkw"]
    assert "<locals>" not in error and "_collect" not in error, error
    assert "unexpected keyword argument 'url_scheme'" in error and "did you mean 'url_schemes'?" in error, error
    assert "accepted keywords: url_schemes, description" in error, error
    error = records["wrongkwser"].error or ""
    assert "unexpected keyword argument 'descripton'" in error and "did you mean 'description'?" in error, error
    assert "accepted keywords: description" in error and "<locals>" not in error, error


def test_register_keeps_its_private_parameters_to_itself() -> None:
    """register_backend's own _provider/_record keywords were accepted from a plugin."""

    class Sneaky:
        @hookimpl
        def sitq_register_backends(self, register: Any) -> None:
            register("sneaky", "sitq_dictstore.backend:DictStoreBackend", _record=None)

    manager = SitqPluginManager(load_entrypoints=False, strict=False)
    manager.register_plugin(Sneaky(), "sneaky")
    record = {r.name: r for r in manager.plugin_records()}["sneaky"]
    assert record.status == "broken" and "unexpected keyword argument '_record'" in (record.error or ""), record


def test_a_register_call_missing_an_argument_says_register(site: Path) -> None:
    make_dist(
        site,
        "acme-short",
        "short",
        "acme_short_plugin",
        """
        from sitq_core.hookspecs import hookimpl

        @hookimpl
        def sitq_register_backends(register):
            register("short")
        """,
    )
    error = {r.name: r for r in SitqPluginManager().plugin_records()}["short"].error or ""
    assert "<locals>" not in error and "register(name, backend" in error and "'backend'" in error, error


def test_check_plugin_reports_a_class_that_is_not_a_backend_once(site: Path) -> None:
    from sitq_core.testing import check_plugin

    make_dist(
        site,
        "acme-notbackend",
        "notbackend",
        "acme_notbackend_plugin",
        """
        from sitq_core.hookspecs import hookimpl

        class NotABackend:
            pass

        @hookimpl
        def sitq_register_backends(register):
            register("notbackend", NotABackend)
        """,
    )
    problems = check_plugin("notbackend")
    about = [p for p in problems if "not a subclass of Backend" in p]
    assert len(about) == 1, problems


def test_check_plugin_reports_a_name_clash_once(site: Path) -> None:
    from sitq_core.testing import check_plugin

    make_dist(
        site,
        "acme-clashonce",
        "clashonce",
        "acme_clashonce_plugin",
        """
        from sitq_core.hookspecs import hookimpl

        @hookimpl
        def sitq_register_serializers(register):
            register("msgpack", "sitq_core.serializers:MsgpackSerializer")

        @hookimpl
        def sitq_register_backends(register):
            register("dictstore", "sitq_dictstore.backend:DictStoreBackend")
        """,
    )
    problems = check_plugin("clashonce")
    assert sum("serializer 'msgpack'" in p for p in problems) == 1, problems
    assert sum("backend 'dictstore'" in p for p in problems) == 1, problems


def test_the_listings_show_a_backend_whose_target_fails_to_import_as_failed_to_load(site: Path) -> None:
    """sitq-postgres installed without asyncpg was listed as ok by `sitq backends`, `sitq plugins` and
    `sitq --version` (its target is imported only when chosen); `sitq stats -b postgresql://` then failed."""
    import io
    import json

    from sitq_core.cli import main

    make_dist(
        site,
        "acme-nodriver",
        "nodriver",
        "acme_nodriver_plugin",
        """
        from sitq_core.hookspecs import hookimpl

        @hookimpl
        def sitq_register_backends(register):
            register("nodriver", "acme_nodriver_backend:NoDriverBackend", description="needs a driver")
        """,
    )
    (site / "acme_nodriver_backend.py").write_text("import no_such_driver_xyz\n")

    def listed(*args: str) -> str:
        out = io.StringIO()
        assert main([*args], stdout=out) == 0
        return out.getvalue()

    rows = {(row["kind"], row["name"]): row for row in json.loads(listed("backends", "--json"))}
    row = rows[("backend", "nodriver")]
    assert row["broken"] is True and row["installed"] is True, row
    assert row["description"].startswith("installed but failed to load: "), row
    assert "No module named 'no_such_driver_xyz'" in row["description"], row
    assert rows[("backend", "sqlite")]["broken"] is False  # the others still load
    line = next(line for line in listed("backends").splitlines() if line.split()[:2] == ["backend", "nodriver"])
    assert line.endswith(row["description"]), line
    assert "needs a driver" not in line

    records = {record["name"]: record for record in json.loads(listed("plugins", "--json"))}
    assert records["nodriver"]["status"] == "broken", records["nodriver"]
    assert "No module named 'no_such_driver_xyz'" in records["nodriver"]["error"]
    assert records["dictstore"]["status"] == "ok"
    line = next(line for line in listed("plugins").splitlines() if line.startswith("nodriver "))
    assert " broken: " in line and "no_such_driver_xyz" in line, line

    version = listed("--version")
    line = next(line for line in version.splitlines() if "acme-nodriver" in line)
    assert "(nodriver, broken: " in line and "no_such_driver_xyz" in line, version


@pytest.mark.parametrize("schemes", ["jsonx", "bs2"])
def test_url_schemes_given_as_a_bare_string_is_refused_by_name(schemes: str) -> None:
    """'jsonx' registered the schemes 'j', 's', 'o', 'n', 'x'; 'bs2' failed on "backend name '2'"."""

    class Stringy:
        @hookimpl
        def sitq_register_backends(self, register: Any) -> None:
            register("strs", "sitq_dictstore.backend:DictStoreBackend", url_schemes=schemes)

    manager = SitqPluginManager(load_entrypoints=False, strict=False)
    manager.register_plugin(Stringy(), "stringy")
    record = {r.name: r for r in manager.plugin_records()}["stringy"]
    error = record.error or ""
    assert record.status == "broken" and record.backends == [], record
    assert "ValidationError" in error and "url_schemes" in error and f"({schemes!r},)" in error, error
    assert "backend name" not in error, error
    with pytest.raises(UnknownBackendError):
        manager.backend_class(schemes[0])


def test_url_schemes_that_is_not_a_sequence_is_refused_by_name() -> None:
    class Numbery:
        @hookimpl
        def sitq_register_backends(self, register: Any) -> None:
            register("nums", "sitq_dictstore.backend:DictStoreBackend", url_schemes=5)

    manager = SitqPluginManager(load_entrypoints=False, strict=False)
    manager.register_plugin(Numbery(), "numbery")
    record = {r.name: r for r in manager.plugin_records()}["numbery"]
    error = record.error or ""
    assert record.status == "broken" and "url_schemes" in error and "int" in error, error
    assert "not iterable" not in error, error


def test_a_scheme_clash_is_told_only_to_the_two_plugins_in_it() -> None:
    """A plugin clashing with two others put both clashes (and advice naming all three) on each of them."""

    class Files:
        @hookimpl
        def sitq_register_backends(self, register: Any) -> None:
            register("files", "sitq_dictstore.backend:DictStoreBackend", url_schemes=("files+json",))

    class Rows:
        @hookimpl
        def sitq_register_backends(self, register: Any) -> None:
            register("rows", "sitq_dictstore.backend:DictStoreBackend", url_schemes=("rowsql",))

    class Clashy:
        @hookimpl
        def sitq_register_backends(self, register: Any) -> None:
            register("clashy", "sitq_dictstore.backend:DictStoreBackend", url_schemes=("rowsql", "files+json"))

    manager = SitqPluginManager(load_entrypoints=False, strict=False)
    for plugin, name in ((Files(), "files"), (Rows(), "rows"), (Clashy(), "clashy")):
        manager.register_plugin(plugin, name)
    records = {r.name: r for r in manager.plugin_records()}
    files, rows, clashy = (records[name].error or "" for name in ("files", "rows", "clashy"))
    assert "'files+json'" in files and "rowsql" not in files and "rows" not in files, files
    assert "'rowsql'" in rows and "files" not in rows, rows
    assert "'files+json'" in clashy and "'rowsql'" in clashy, clashy
    for clash in clashy.split("; backend "):  # each clash's advice names its own two plugins only
        other = "rows" if "rowsql" in clash.split(".")[0] else "files"
        unrelated = "files" if other == "rows" else "rows"
        assert f"'{other}'" in clash and f"'{unrelated}'" not in clash, clash
    assert {records[name].status for name in ("files", "rows", "clashy")} == {"conflict"}
