"""What the listings, strict mode, lookups and check_plugin say of a third-party plugin that failed to load or
whose entry point names the wrong module, through real entry points of temporary distributions."""

from __future__ import annotations

import io
import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from sitq_core.cli import main
from sitq_core.errors import BrokenPluginError, UnknownBackendError
from sitq_core.plugin_manager import SitqPluginManager

HOOKS = """
from sitq_core.hookspecs import hookimpl

@hookimpl
def sitq_register_backends(register):
    register("{name}", "sitq_dictstore.backend:DictStoreBackend")
"""

RAISES = """
from sitq_core.hookspecs import hookimpl

@hookimpl
def sitq_register_backends(register):
    raise RuntimeError("boom in the hook")
"""

BAD_NAME = """
from sitq_core.hookspecs import hookimpl

@hookimpl
def sitq_register_backends(register):
    register("Bad Name!", "sitq_dictstore.backend:DictStoreBackend")
"""

NO_HOOKS_HINT = "implements no sitq_* hook: does the entry point name the module with the hooks?"


def make_dist(site: Path, dist: str, entry_point: str, files: dict[str, str], group: str = "sitq") -> None:
    """A minimal installed distribution: a dist-info with one entry point in ``group``, and its files."""
    info = site / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[{group}]\n{entry_point}\n")
    for relative, source in files.items():
        path = site / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))


def make_jsonq(site: Path, target: str, *, group: str = "sitq") -> None:
    """sitq-jsonq, a package whose hooks are in ``sitq_jsonq.plugin``; its entry point names ``target``."""
    files = {"sitq_jsonq/__init__.py": '"""The package; the hooks are in its plugin module."""\n'}
    files["sitq_jsonq/plugin.py"] = HOOKS.format(name="jsonq")
    make_dist(site, "sitq-jsonq", f"jsonq = {target}", files, group=group)


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    for variable in ("SITQ_STRICT_PLUGINS", "SITQ_LOAD_PLUGINS", "SITQ_DISABLED_PLUGINS", "SITQ_BACKEND"):
        monkeypatch.delenv(variable, raising=False)
    return folder


def _backends(as_json: bool = False) -> str:
    out = io.StringIO()
    assert main(["backends", *(["--json"] if as_json else [])], stdout=out) == 0
    return out.getvalue()


def _rows() -> dict[str, dict[str, Any]]:
    return {row["name"]: row for row in json.loads(_backends(as_json=True))}


# ------------------------------------------------ sitq backends: a third-party plugin that failed to load


@pytest.mark.parametrize(
    ("entry_point", "files", "said"),
    [
        ("acmeimp = acme_imp", {"acme_imp.py": "import no_such_dependency_zz\n"}, "no_such_dependency_zz"),
        ("acmeraise = acme_raise", {"acme_raise.py": RAISES}, "boom in the hook"),
        ("acmebad = acme_bad", {"acme_bad.py": BAD_NAME}, "'Bad Name!'"),
    ],
    ids=["import-error", "hook-raises", "bad-name"],
)
def test_the_backends_command_lists_a_third_party_plugin_that_failed_to_load(
    site: Path, entry_point: str, files: dict[str, str], said: str
) -> None:
    """It was left out of the table and the JSON: only a WARNING on stderr said it was there at all."""
    name = entry_point.split(" = ")[0]
    make_dist(site, f"acme-{name}", entry_point, files)
    line = next((line for line in _backends().splitlines() if f" {name} " in line), None)
    assert line is not None, _backends()
    assert line.startswith("plugin ") and "failed to load" in line and said in line, line
    row = _rows()[name]
    assert (row["kind"], row["broken"], row["installed"], row["dist"]) == ("plugin", True, True, f"acme-{name}")
    assert said in row["description"] and row["schemes"] == []


def test_a_broken_plugin_whose_broken_name_is_listed_is_not_listed_twice(site: Path) -> None:
    """A registered class that fails its checks is its own BROKEN row already; one line says it."""
    source = HOOKS.format(name="fine-one") + '\n    register("notabackend", dict)\n'
    make_dist(site, "acme-half", "half = acme_half", {"acme_half.py": source})
    rows = _rows()
    assert rows["notabackend"]["broken"] is True and "half" not in rows, sorted(rows)


def test_a_plugin_that_registered_some_names_and_then_failed_is_listed(site: Path) -> None:
    """Its good names are listed as usable; the failure after them must show too."""
    source = HOOKS.format(name="first-ok") + '\n    raise RuntimeError("then it broke")\n'
    make_dist(site, "acme-partial", "partial = acme_partial", {"acme_partial.py": source})
    rows = _rows()
    assert rows["first-ok"]["broken"] is False
    assert rows["partial"]["broken"] is True and "then it broke" in rows["partial"]["description"]


# ------------------------------------------------ an entry point naming a module without the hooks


def test_the_plugins_command_warns_about_an_entry_point_without_hooks(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_jsonq(site, "sitq_jsonq")  # should be sitq_jsonq.plugin
    out = io.StringIO()
    assert main(["plugins"], stdout=out) == 0
    lines = out.getvalue().splitlines()
    at = next(index for index, line in enumerate(lines) if line.startswith("jsonq "))
    assert lines[at].split()[-1] == "ok", lines[at]  # nothing in it is broken: it does nothing
    assert NO_HOOKS_HINT in lines[at + 1] and "warning:" in lines[at + 1], out.getvalue()
    out = io.StringIO()
    main(["plugins", "--json"], stdout=out)
    record = {r["name"]: r for r in json.loads(out.getvalue())}["jsonq"]
    assert any(NO_HOOKS_HINT in warning for warning in record["warnings"]), record


def test_the_right_entry_point_has_no_such_warning(site: Path) -> None:
    make_jsonq(site, "sitq_jsonq.plugin")
    record = {r.name: r for r in SitqPluginManager().plugin_records()}["jsonq"]
    assert (record.status, record.warnings, record.backends) == ("ok", [], ["jsonq"])


def test_strict_mode_refuses_an_entry_point_without_hooks(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_jsonq(site, "sitq_jsonq")
    monkeypatch.setenv("SITQ_STRICT_PLUGINS", "1")
    with pytest.raises(BrokenPluginError, match=r"implements no sitq_\* hook") as info:
        SitqPluginManager().backend_class("sqlite")
    assert "sitq-jsonq" in info.value.message


def test_no_backend_named_after_a_plugin_that_registers_nothing_says_so(site: Path) -> None:
    """``connect("jsonq://...")`` said only "no backend named 'jsonq'" though sitq-jsonq is installed."""
    import sitq

    make_jsonq(site, "sitq_jsonq")
    with pytest.raises(UnknownBackendError) as info:
        sitq.connect("jsonq://x")
    message = info.value.message
    assert "no backend named 'jsonq'" in message and "sitq-jsonq" in message, message
    assert "registers nothing" in message and NO_HOOKS_HINT in message, message


def test_check_plugin_says_an_entry_point_has_no_hooks(site: Path) -> None:
    from sitq_core.testing import check_plugin

    make_jsonq(site, "sitq_jsonq")
    problems = check_plugin("jsonq")
    assert any(NO_HOOKS_HINT in problem for problem in problems), problems


# ------------------------------------------------ check_plugin


def test_check_plugin_says_the_same_in_strict_mode(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Strict mode said "plugin is broken: sitq plugin 'jsonq' from sitq-jsonq failed to load: registration
    failed: ...": the same problem in other words, wrapped twice."""
    from sitq_core.testing import check_plugin

    make_dist(site, "sitq-jsonq", "jsonq = acme_raise_q", {"acme_raise_q.py": RAISES})
    relaxed = check_plugin("jsonq")
    monkeypatch.setenv("SITQ_STRICT_PLUGINS", "1")
    strict = check_plugin("jsonq")
    assert strict == relaxed, (strict, relaxed)
    assert any(p.startswith("plugin is broken: registration failed: RuntimeError: boom") for p in strict), strict


def test_check_plugin_names_the_group_a_distribution_used_instead(site: Path) -> None:
    from sitq_core.testing import check_plugin

    make_jsonq(site, "sitq_jsonq.plugin", group="sitq_plugins")
    [problem] = check_plugin("sitq-jsonq")
    assert problem == (
        "distribution sitq-jsonq is installed but has no entry point in group 'sitq'; it has ones in: sitq_plugins"
    )
