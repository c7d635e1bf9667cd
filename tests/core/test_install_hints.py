"""Install hints lead with the source checkout: on PyPI the name 'sitq' is an unrelated project's."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from sitq_core.errors import BackendNotInstalledError
from sitq_core.install_hints import install_hint
from sitq_core.plugin_manager import KNOWN_PLUGINS, SitqPluginManager


def _leads_with_the_checkout(text: str, folder: str, extra: str) -> None:
    checkout = text.find(f"pip install {folder}")
    release = text.find(f"pip install {extra}")
    assert 0 <= checkout < release, text  # the checkout's command first
    assert f"pip install '{extra}'" in text, text  # quoted too, for shells that expand brackets
    assert "PyPI" in text and "unrelated" in text, text  # and why the release's form is not for PyPI


def test_the_hint_leads_with_the_checkout_command() -> None:
    """Before: it led with 'pip install sitq[postgres]', which on PyPI installs another project over sitq."""
    _leads_with_the_checkout(install_hint("sitq-postgres", "sitq[postgres]"), "./sitq_postgres", "sitq[postgres]")


def test_backend_not_installed_leads_with_the_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(KNOWN_PLUGINS, "mysql", ("sitq-mysql", "sitq[mysql]"))
    with pytest.raises(BackendNotInstalledError) as info:
        SitqPluginManager().backend_class("mysql")
    _leads_with_the_checkout(str(info.value), "./sitq_mysql", "sitq[mysql]")


@pytest.mark.parametrize("blocked", ["sitq_sqlite", "sitq_sqlite.backend"], ids=["absent", "broken"])
def test_the_facade_error_leads_with_the_checkout(blocked: str) -> None:
    code = textwrap.dedent(
        f"""
        import sys
        sys.modules[{blocked!r}] = None  # as if sitq-sqlite, or its backend module, were not importable
        import sitq
        try:
            from sitq import SQLiteBackend
        except ImportError as exc:
            print(exc)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    _leads_with_the_checkout(done.stdout, "./sitq_sqlite", "sitq[sqlite]")
    assert "Reinstall with from" not in done.stdout, done.stdout


@pytest.mark.parametrize("blocked", ["sitq_sqlite", "sitq_sqlite.backend"], ids=["absent", "broken"])
def test_the_documented_feature_checks_answer_without_the_plugin(blocked: str) -> None:
    """api.md's idioms: catching ImportError, and ``sitq.__all__`` (hasattr raises: see api.md, Backends)."""
    code = textwrap.dedent(
        f"""
        import sys
        sys.modules[{blocked!r}] = None
        import sitq
        try:
            from sitq import SQLiteBackend
        except ImportError:
            SQLiteBackend = None
        print(SQLiteBackend is None, "SQLiteBackend" in sitq.__all__, "PostgresBackend" in sitq.__all__)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert done.stdout.split() == ["True", "False", "True"], done.stdout + done.stderr


def test_a_broken_plugin_chosen_by_url_leads_with_the_checkout() -> None:
    """Choosing the backend by URL named only 'pip install sitq[sqlite]' (the unrelated PyPI project)."""
    code = textwrap.dedent(
        """
        import sys
        sys.modules["sitq_sqlite"] = None  # installed, but the plugin does not import
        import sitq
        try:
            sitq.TaskQueue("sqlite:///never-made.db")
        except sitq.PluginError as exc:
            print(exc)
        """
    )
    env = {key: value for key, value in os.environ.items() if key != "SITQ_STRICT_PLUGINS"}  # a user's default
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120, env=env
    )
    _leads_with_the_checkout(done.stdout, "./sitq_sqlite", "sitq[sqlite]")
