"""Backends chosen by name: the third-party dictstore plugin by URL, config and environment, end to end."""

from __future__ import annotations

from pathlib import Path

import pytest

import sitq
from sitq import ConfigurationError, SQLiteBackend, TaskQueue, Worker
from sitq_dictstore import DictStoreBackend

import sitq_test_tasks as tasks


def test_url_selects_the_third_party_backend() -> None:
    queue = sitq.connect("dictstore://?store=by-url")
    assert isinstance(queue.backend, DictStoreBackend)
    assert queue.serializer.name == "cloudpickle"


def test_config_mapping_selects_backend_and_serializer() -> None:
    queue = sitq.connect({"backend": "dictstore", "store": "by-config", "serializer": "msgpack"})
    assert isinstance(queue.backend, DictStoreBackend)
    assert queue.serializer.name == "msgpack"


def test_environment_variable_is_the_fallback(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SITQ_BACKEND", "dictstore://?store=by-env")
    assert isinstance(sitq.connect().backend, DictStoreBackend)
    assert isinstance(sitq.connect(f"sqlite:///{tmp_path / 'explicit.db'}").backend, SQLiteBackend)
    monkeypatch.delenv("SITQ_BACKEND")
    monkeypatch.chdir(tmp_path)
    default = sitq.connect().backend
    assert isinstance(default, SQLiteBackend) and Path(default.path).name == "sitq.db"


@pytest.mark.parametrize("empty", ["", "  "])
def test_an_empty_sitq_backend_is_an_error_not_the_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, empty: str
) -> None:
    monkeypatch.setenv("SITQ_BACKEND", empty)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigurationError) as caught:
        sitq.connect()
    assert caught.value.parameter == "SITQ_BACKEND" and "set but empty" in str(caught.value)
    assert not (tmp_path / "sitq.db").exists()
    assert isinstance(sitq.connect(f"sqlite:///{tmp_path / 'explicit.db'}").backend, SQLiteBackend)


def test_options_with_no_backend_named_go_to_the_default_backend(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("SITQ_BACKEND", raising=False)
    monkeypatch.chdir(tmp_path)
    backend = sitq.connect(path="app.db", synchronous="NORMAL").backend  # no URL was written: none to clash with
    assert isinstance(backend, SQLiteBackend)
    assert Path(backend.path) == tmp_path / "app.db" and backend.synchronous == "NORMAL"
    assert Path(sitq.connect(synchronous="NORMAL").backend.path).name == "sitq.db"


def test_unknown_backend_lists_installed_names() -> None:
    with pytest.raises(ConfigurationError) as info:
        sitq.connect("nosuch://x")
    assert "dictstore" in str(info.value) and "sqlite" in str(info.value)


@pytest.mark.parametrize("given", ["tasks.db", "data/tasks.sqlite3", "./t21.db", "Data/Tasks.db"])
def test_a_file_path_given_as_a_backend_name_says_how_to_write_it(given: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        sitq.TaskQueue(given)
    assert f"no backend named {given!r}" in str(info.value)  # as given: paths are case-sensitive
    assert f"'sqlite:///{given}'" in str(info.value)
    assert "Did you mean" not in str(info.value)


@pytest.mark.parametrize("given", ["sqlite:tasks.db", "postgres.example.com", "redis"])
def test_names_that_are_not_file_paths_get_no_file_hint(given: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        sitq.TaskQueue(given)
    assert "sqlite:///" not in str(info.value)


def test_unknown_option_names_itself() -> None:
    with pytest.raises(ConfigurationError) as info:
        sitq.connect({"backend": "sqlite", "pth": "x.db"})
    assert info.value.parameter == "pth" and "path" in (info.value.valid_options or [])


@pytest.mark.asyncio
@pytest.mark.parametrize("serializer", ["cloudpickle", "msgpack"])
async def test_same_task_code_runs_on_either_backend(tmp_path: Path, serializer: str) -> None:
    for url in (f"sqlite:///{tmp_path / serializer}.db", f"dictstore://?store=e2e-{serializer}"):
        async with TaskQueue(url, serializer=serializer) as queue:
            worker = Worker(queue.backend)
            await worker.start()
            result = await queue.get_result(await queue.enqueue(tasks.add, 40, b=2), timeout=10)
            failed = await queue.get_result(await queue.enqueue(tasks.boom, "no"), timeout=10)
            await worker.stop()
        assert result is not None and queue.deserialize_result(result) == 42, url
        assert failed is not None and failed.status == "failed" and failed.error == "no", url


def test_stats_on_a_file_that_holds_no_sitq_data_does_not_speak_of_sqlite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import asyncio
    import io

    from sitq_core.cli import _stats

    class FileStore(DictStoreBackend):
        """A third-party file-based store: its file exists, but holds no sitq data."""

        async def exists(self) -> bool | None:
            return False

    store = FileStore(store="file-store")
    store.path = str(tmp_path / "tasks.json")  # type: ignore[attr-defined]
    (tmp_path / "tasks.json").write_text("{}")
    assert asyncio.run(_stats(io.StringIO(), store, as_json=False)) == 2
    error = capsys.readouterr().err
    assert "is not a sitq database" in error and "dictstore store" in error and "SQLite" not in error, error


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_a_worker_made_from_an_in_memory_url_warns_that_no_queue_can_reach_it(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """TaskQueue('sqlite://') and Worker('sqlite://') made two databases, and the tasks silently never ran."""
    sitq.Worker(url)
    assert any("no queue can reach" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)
    caplog.clear()
    with_queue = sitq.TaskQueue(url)
    sitq.Worker(with_queue.backend)  # the documented way: one database for both
    assert not any("no queue can reach" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("value", "says"),
    [("postgress://db/app", "no backend named 'postgress'"), ("sqlite:///app.db?synchronous=normall", "synchronous")],
)
def test_a_bad_sitq_backend_value_is_named_as_coming_from_the_variable(
    monkeypatch: pytest.MonkeyPatch, value: str, says: str
) -> None:
    monkeypatch.setenv("SITQ_BACKEND", value)
    with pytest.raises(sitq.SitqError) as error:
        sitq.connect()
    assert says in str(error.value) and "from the SITQ_BACKEND environment variable" in str(error.value)
    with pytest.raises(sitq.SitqError) as again:
        sitq.connect()
    assert str(again.value).count("SITQ_BACKEND") == 1, "said once, not once more per call"
    monkeypatch.delenv("SITQ_BACKEND")
    with pytest.raises(sitq.SitqError) as direct:
        sitq.connect(value)  # given explicitly: no mention of the variable
    assert "SITQ_BACKEND" not in str(direct.value)


class NeedsSize(DictStoreBackend):
    """A third-party backend whose __init__ has a parameter without a default."""

    name = "needs-size"

    def __init__(self, size: int, store: str = "default") -> None:
        super().__init__(store=store)
        self.size = size


def test_a_required_backend_option_left_out_is_named_not_a_raw_type_error() -> None:
    """`sitq stats --backend jsonq` crashed with "TypeError: JsonQBackend.__init__() missing 1 required positional
    argument: 'path'" (not a SitqError: the CLI showed a traceback, exit 1)."""
    assert NeedsSize.required_options() == ["size"]
    for build in (lambda: NeedsSize.from_config({}), lambda: NeedsSize.from_url(sitq.parse_backend_url("x://"))):
        with pytest.raises(ConfigurationError) as info:
            build()
        assert info.value.parameter == "size" and info.value.valid_options == ["size", "store"]
        assert "needs the option 'size'" in str(info.value) and "?size=" in str(info.value)
    assert NeedsSize.from_url(sitq.parse_backend_url("x://?size=3")).size == 3  # converted from text
    assert DictStoreBackend.required_options() == []


@pytest.mark.parametrize("url", ["dictstore://:pw@", "dictstore://host:0", "dictstore://h1,h2", "dictstore://u@"])
def test_the_default_from_url_refuses_every_part_but_the_query(url: str) -> None:
    """An empty user with a password (':pw@') and port 0 passed the truthiness checks: the password was dropped."""
    with pytest.raises(ConfigurationError) as info:
        sitq.connect(url)
    assert info.value.parameter == "url" and "pw" not in str(info.value)
    assert "takes no host, port, user, password or path" in str(info.value)
