"""What an unknown or refused backend/serializer choice says, the first time and as the user typed it.

Each test pins a report that was wrong before: a broken backend suggested for a typo until it had failed
once, a misspelt URL scheme shown lower-cased, ``sitq stats`` taking a ``?serializer=`` that names nothing,
a ``SITQ_BACKEND`` serializer error not naming the variable, and a CLI line ending in ``(context: ...)``.
"""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import sitq
from sitq_core.cli import main
from sitq_core.errors import BrokenPluginError, UnknownBackendError, UnknownSerializerError

BROKEN_BACKEND = """
from sitq_core.hookspecs import hookimpl

@hookimpl
def sitq_register_backends(register):
    register("acmebroken", "acme_gone_driver_xyz.backend:AcmeBackend", description="needs a driver")
"""


@pytest.fixture(autouse=True)
def _plain_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("SITQ_BACKEND", "SITQ_STRICT_PLUGINS", "SITQ_LOAD_PLUGINS", "SITQ_DISABLED_PLUGINS"):
        monkeypatch.delenv(variable, raising=False)


@pytest.fixture
def broken_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """An installed plugin whose backend's target does not import (as sitq-postgres without asyncpg)."""
    site = tmp_path / "site"
    info = site / "acme_broken_backend-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-broken-backend\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[sitq]\nacmebroken = acme_broken_backend_plugin\n")
    (site / "acme_broken_backend_plugin.py").write_text(textwrap.dedent(BROKEN_BACKEND))
    monkeypatch.syspath_prepend(str(site))
    return "acmebroken"


@pytest.mark.parametrize("typo", ["acmebrokn://x", "acmebrokn"])
def test_a_typo_close_to_a_broken_backend_lists_it_apart_from_the_first_call(broken_backend: str, typo: str) -> None:
    """Before: "Installed: ..., acmebroken, .... Did you mean 'acmebroken'?" until a load of it had failed once."""
    with pytest.raises(UnknownBackendError) as info:
        sitq.connect(typo)
    message = info.value.message
    assert "Did you mean 'acmebroken'" not in message, message
    assert f"Installed but cannot be chosen: {broken_backend} (broken)." in message, message
    assert broken_backend not in (info.value.valid_options or []), info.value.valid_options
    with pytest.raises(BrokenPluginError):  # and it is broken indeed
        sitq.connect(f"{broken_backend}://x")
    with pytest.raises(UnknownBackendError) as again:
        sitq.connect(typo)
    assert again.value.message == message  # what the process tried before changes nothing


def test_postgres_without_its_driver_is_not_suggested_for_a_typo() -> None:
    """The tester's case: sitq-postgres installed, asyncpg missing (blocked here in a child process)."""
    code = textwrap.dedent(
        """
        import sys
        sys.modules["asyncpg"] = None
        import sitq
        try:
            sitq.connect("postgrs://u@h/x")
        except sitq.ConfigurationError as error:
            print(error.message)
            print(error.valid_options)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    message, options = done.stdout.strip().splitlines()
    assert "Did you mean 'postgres'" not in message, message
    assert "postgres (broken)" in message, message
    assert "'postgres'" not in options, options


@pytest.mark.parametrize(
    ("url", "given"), [("Redis://x", "Redis"), ("Sqlit:///w.db", "Sqlit"), ("MyQ+Drv://h/d", "MyQ")]
)
def test_a_misspelt_url_scheme_is_shown_as_given(url: str, given: str) -> None:
    """Before: "no backend named 'redis'": the scheme lower-cased (a name given alone was already shown as given)."""
    with pytest.raises(UnknownBackendError) as info:
        sitq.connect(url)
    assert info.value.message.startswith(f"no backend named {given!r}."), info.value.message
    assert info.value.value == given


def test_a_misspelt_scheme_keeps_its_suggestion_and_matches_case_insensitively(tmp_path: Path) -> None:
    with pytest.raises(UnknownBackendError) as info:
        sitq.connect(f"Sqlit:///{tmp_path}/w.db")
    assert "Did you mean 'sqlite'?" in info.value.message
    queue = sitq.connect(f"SQLite:///{tmp_path}/w.db")  # matching stays case-insensitive
    assert type(queue.backend).__name__ == "SQLiteBackend"


def test_the_cli_shows_a_misspelt_scheme_as_given(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["stats", "-b", f"Sqlit:///{tmp_path}/w.db"], stdout=io.StringIO()) == 2
    err = capsys.readouterr().err
    assert "--backend: no backend named 'Sqlit'." in err, err


def _make_store(path: Path) -> None:
    with sitq.SyncTaskQueue(f"sqlite:///{path}") as queue:
        queue.counts()


def test_stats_refuses_a_url_serializer_that_names_nothing(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Before: exit 0 (the counts), while sitq worker with the same URL exited 2."""
    store = tmp_path / "w.db"
    _make_store(store)
    out = io.StringIO()
    assert main(["stats", "-b", f"sqlite:///{store}?serializer=jsn"], stdout=out) == 2
    err = capsys.readouterr().err
    assert err.startswith("sitq: error: --backend (its ?serializer=): no serializer named 'jsn'."), err
    assert "(context:" not in err and out.getvalue() == "", err
    assert main(["stats", "-b", f"sqlite:///{store}?serializer=msgpack"], stdout=io.StringIO()) == 0  # a real one


@pytest.mark.parametrize("command", ["stats", "worker"])
def test_a_bad_serializer_in_the_variable_is_named_as_such(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, command: str
) -> None:
    store = tmp_path / "w.db"
    _make_store(store)
    monkeypatch.setenv("SITQ_BACKEND", f"sqlite:///{store}?serializer=jsn")
    assert main([command], stdout=io.StringIO()) == 2
    err = capsys.readouterr().err
    line = err.strip().splitlines()[-1]
    assert line.startswith("sitq: error: SITQ_BACKEND (its ?serializer=): no serializer named 'jsn'."), err
    assert "(from the SITQ_BACKEND environment variable)" not in line, line  # named once, first


def test_a_serializer_error_caused_by_the_variable_says_so(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Before: "no serializer named 'jsn'. ..." and no word of SITQ_BACKEND, unlike every other error it causes."""
    monkeypatch.setenv("SITQ_BACKEND", f"sqlite:///{tmp_path}/a.db?serializer=jsn")
    with pytest.raises(UnknownSerializerError) as info:
        sitq.connect()
    message = info.value.message
    assert message.startswith("no serializer named 'jsn'."), message
    assert message.endswith(" (from the SITQ_BACKEND environment variable)"), message
    with pytest.raises(UnknownSerializerError) as again:
        sitq.TaskQueue(f"sqlite:///{tmp_path}/a.db?serializer=jsn")
    assert "SITQ_BACKEND" not in again.value.message  # a URL given in code is not the variable's
    queue = sitq.connect(serializer="cloudpickle")  # a serializer given in code wins over the URL's, as before
    assert queue.serializer.name == "cloudpickle"


def test_a_cli_serializer_error_has_no_context_dump(tmp_path: Path) -> None:
    """Before: "... pip install msgpack (context: operation='init', data_type='msgpack')"."""
    code = textwrap.dedent(
        f"""
        import sys
        sys.modules["msgpack"] = None  # as if msgpack were not installed
        from sitq_core.cli import main
        sys.exit(main(["worker", "-s", "msgpack", "-b", {f"sqlite:///{tmp_path}/w.db"!r}]))
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("sitq: error: ") and "pip install msgpack" in line, done.stderr
    assert "(context:" not in line and "Traceback" not in done.stderr, done.stderr
