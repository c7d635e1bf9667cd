"""A SQLite connect that fails says so (``operation='connect'``); wrong constructor arguments name the class users
call, not its private base."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sitq import SQLiteBackend
from sitq_core.errors import ConnectionError


@pytest.mark.asyncio
async def test_a_file_that_is_not_a_database_is_a_connect_error(tmp_path: Path) -> None:
    """Before: ConnectionError.operation was None."""
    path = tmp_path / "notes.db"
    path.write_bytes(b"these are not the pages of a SQLite database " * 100)
    backend = SQLiteBackend(path)
    try:
        with pytest.raises(ConnectionError) as info:
            await backend.connect()
        assert info.value.operation == "connect", info.value.context
        assert "is it a SQLite database file?" in info.value.message
    finally:
        await backend.close()
    assert path.read_bytes().startswith(b"these are not")  # left as it was


@pytest.mark.asyncio
async def test_exists_on_a_file_that_cannot_be_read_says_exists(tmp_path: Path) -> None:
    folder = tmp_path / "a-folder.db"
    folder.mkdir()
    with pytest.raises(ConnectionError) as info:
        await SQLiteBackend(folder).exists()
    assert info.value.operation == "exists", info.value.context


@pytest.mark.parametrize(
    ("args", "kwargs", "says"),
    [
        ((), {}, "missing 1 required positional argument: 'path'"),
        (("a.db", 5), {}, "takes 2 positional arguments but 3 were given"),
        ((), {"pathx": "a.db"}, "got an unexpected keyword argument 'pathx'"),
    ],
)
def test_wrong_arguments_name_sqlitebackend_init(args: tuple[Any, ...], kwargs: dict[str, Any], says: str) -> None:
    """Before: "_Connections.__init__() missing 1 required positional argument: 'path'"."""
    with pytest.raises(TypeError) as info:
        SQLiteBackend(*args, **kwargs)
    # the start only: Python 3.13 goes on with a hint for a misspelt keyword (". Did you mean 'path'?")
    assert str(info.value).startswith(f"SQLiteBackend.__init__() {says}"), str(info.value)


def test_the_options_a_url_or_config_may_give_are_unchanged() -> None:
    assert SQLiteBackend.config_options() == [
        "path",
        "journal_mode",
        "synchronous",
        "busy_timeout",
        "cache_size_kib",
        "watch_interval",
    ]
    assert SQLiteBackend.required_options() == ["path"]
