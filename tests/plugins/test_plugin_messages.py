"""What sitq logs and advises about clashing plugins, through real entry points of temporary distributions."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from sitq_core.errors import BrokenPluginError
from sitq_core.plugin_manager import SitqPluginManager

from sitq_test_helpers import make_dist

TWIN = """
from sitq_core.hookspecs import hookimpl

@hookimpl
def sitq_register_backends(register):
    register("twin", "sitq_dictstore.backend:DictStoreBackend")
"""

USURPER = """
from sitq_core.hookspecs import hookimpl

@hookimpl
def sitq_register_backends(register):
    register("dictstore", "sitq_dictstore.backend:DictStoreBackend")
"""

TWICE = """
from sitq_core.hookspecs import hookimpl

@hookimpl
def sitq_register_backends(register):
    register("again", "sitq_dictstore.backend:DictStoreBackend")
    register("again", "sitq_dictstore.backend:DictStoreBackend")
"""


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    for variable in ("SITQ_STRICT_PLUGINS", "SITQ_LOAD_PLUGINS", "SITQ_DISABLED_PLUGINS"):
        monkeypatch.delenv(variable, raising=False)
    return folder


def _lines(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and text in r.getMessage()]


def test_a_name_clash_is_logged_once_per_process_however_often_it_is_checked(
    site: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from sitq_core.testing import check_plugin

    make_dist(site, "acme-usurper-once", "usurper_once", "acme_usurper_once", USURPER)
    caplog.set_level(logging.WARNING, logger="sitq")
    for _ in range(3):
        problems = check_plugin("usurper_once")
        assert any("acme-usurper-once" in p or "name clash" in p for p in problems), problems
        SitqPluginManager().plugin_records()  # a listing's own manager
    clashes = _lines(caplog, "'dictstore'")
    assert clashes, [r.getMessage() for r in caplog.records]
    assert len(clashes) == len(set(clashes)), f"a clash was logged more than once: {clashes}"


def test_a_plugin_warning_is_logged_once_per_process(site: Path, caplog: pytest.LogCaptureFixture) -> None:
    make_dist(site, "acme-twice-once", "twice_once", "acme_twice_once", TWICE)
    caplog.set_level(logging.WARNING, logger="sitq")
    for _ in range(3):
        records = {r.name: r for r in SitqPluginManager().plugin_records()}
        assert records["twice_once"].warnings, records["twice_once"]
    lines = _lines(caplog, "registered twice by this plugin")
    assert len(lines) == 1, lines


def test_a_doubly_provided_entry_point_advises_disabling_one_not_loading_only_one(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_dist(site, "acme-twin-a", "twin", "acme_twin_a", TWIN)
    make_dist(site, "acme-twin-b", "twin", "acme_twin_b", TWIN)
    records = {r.name: r for r in SitqPluginManager().plugin_records()}
    advice = records["twin (acme-twin-b)"].error or ""
    assert "SITQ_DISABLED_PLUGINS=acme-twin-b keeps acme-twin-a" in advice, advice
    assert "SITQ_DISABLED_PLUGINS=acme-twin-a loads acme-twin-b instead" in advice, advice
    assert "SITQ_LOAD_PLUGINS" not in advice, advice  # that one would switch off sitq-sqlite and the rest
    monkeypatch.setenv("SITQ_STRICT_PLUGINS", "1")
    with pytest.raises(BrokenPluginError, match="SITQ_DISABLED_PLUGINS=acme-twin-b keeps acme-twin-a"):
        SitqPluginManager().ensure_loaded()
    # the advice works: each setting loads the one it names, keeps the other plugins, and ends the complaint
    for disabled, loaded in (("acme-twin-b", "acme-twin-a"), ("acme-twin-a", "acme-twin-b")):
        monkeypatch.setenv("SITQ_DISABLED_PLUGINS", disabled)
        manager = SitqPluginManager()
        manager.ensure_loaded()
        records = {r.name: r for r in manager.plugin_records()}
        assert records["twin"].dist == loaded and records["twin"].status == "ok", records["twin"]
        assert records[f"twin ({disabled})"].status == "disabled", records
        assert records["sqlite"].status == "ok"


REGISTRATION_MISTAKES = {
    "returns its names": ("return {'mistaken': 'sitq_dictstore.backend:DictStoreBackend'}", "returned a dict"),
    "a name sitq refuses": ("register('X5', 'sitq_dictstore.backend:DictStoreBackend')", "'X5'"),
    "url_scheme=": (
        "register('mistaken', 'sitq_dictstore.backend:DictStoreBackend', url_scheme='m')",
        "did you mean 'url_schemes'",
    ),
    "a bare string of schemes": (
        "register('mistaken', 'sitq_dictstore.backend:DictStoreBackend', url_schemes='m')",
        "not a bare str",
    ),
    "no colon": ("register('mistaken', 'sitq_dictstore.backend.DictStoreBackend')", "not an import string"),
}


@pytest.mark.parametrize("mistake", sorted(REGISTRATION_MISTAKES))
def test_registration_mistakes_are_found_at_the_first_lookup_as_the_guide_says(
    mistake: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """plugins.md: register_plugin accepts the plugin; the first lookup marks it broken; strict mode raises there."""
    import types

    from sitq_core.hookspecs import hookimpl

    call, error = REGISTRATION_MISTAKES[mistake]
    namespace: dict[str, object] = {"hookimpl": hookimpl}
    exec(f"@hookimpl\ndef sitq_register_backends(register):\n    {call}\n", namespace)
    plugin = types.ModuleType("mistaken_plugin")
    plugin.sitq_register_backends = namespace["sitq_register_backends"]  # type: ignore[attr-defined]
    for strict in ("", "1"):
        monkeypatch.setenv("SITQ_STRICT_PLUGINS", strict)
        manager = SitqPluginManager()
        manager.register_plugin(plugin, "mistaken")  # accepted: nothing of what it registers is known yet
        if strict:
            with pytest.raises(BrokenPluginError, match="mistaken"):
                manager.backend_class("dictstore")
        else:
            assert manager.backend_class("dictstore").__name__ == "DictStoreBackend"
            record = {r.name: r for r in manager.plugin_records()}["mistaken"]
            assert record.status == "broken" and error in (record.error or ""), record
