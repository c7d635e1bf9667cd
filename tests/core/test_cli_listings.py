"""The CLI's plugin listing is a table: its columns line up whatever the names' lengths, as `sitq backends` does."""

from __future__ import annotations

import io
import json

import pytest

from sitq_core.cli import main


def _listed(*args: str) -> str:
    out = io.StringIO()
    assert main([*args], stdout=out) == 0
    return out.getvalue()


@pytest.mark.parametrize("args", [("plugins",), ("plugins", "--all")])
def test_the_plugins_table_lines_up_its_columns(args: tuple[str, ...], monkeypatch: pytest.MonkeyPatch) -> None:
    """A name longer than 14 characters (sitq_core.builtin_plugin) or a longer distribution pushed the columns."""
    monkeypatch.delenv("SITQ_LOAD_PLUGINS", raising=False)
    monkeypatch.delenv("SITQ_DISABLED_PLUGINS", raising=False)
    records = json.loads(_listed(*args, "--json"))
    lines = _listed(*args).splitlines()
    rows = [line for line in lines if not line.startswith(" ")]
    assert len(rows) == len(records) >= 3
    where_columns, status_columns = set(), set()
    for record, row in zip(records, rows, strict=True):
        assert row.startswith(f"{record['name']} ")
        where = f"{record['dist'] or '-'} {record['version'] or '-'}"
        where_columns.add(row.index(f" {where} ", len(record["name"])) + 1)
        status = record["status"] if record["error"] is None else f"{record['status']}: {record['error']}"
        assert row.endswith(f" {status}")
        status_columns.add(len(row) - len(status))
    assert len(where_columns) == 1 and len(status_columns) == 1, "\n".join(lines)
    details = [line for line in lines if line.startswith(" ")]  # provides: / observes:, under the second column
    assert details and {len(line) - len(line.lstrip()) for line in details} == where_columns, "\n".join(lines)


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """``sitq`` alone printed the help and exited 0, as if it had done something; an unknown command exits 2."""
    out = io.StringIO()
    assert main([], stdout=out) == 2
    assert out.getvalue() == ""  # nothing on stdout: a script piping it reads no output
    err = capsys.readouterr().err
    assert "sitq: error: a command is required" in err and "worker" in err  # the help lists the commands
    with pytest.raises(SystemExit) as unknown:
        main(["no-such-command"], stdout=out)
    assert unknown.value.code == 2


def test_the_backends_table_lists_each_backends_extra_url_schemes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only --json listed "schemes": the text, 'every name you can choose', left out postgresql, sqlite+aiosqlite."""
    monkeypatch.delenv("SITQ_LOAD_PLUGINS", raising=False)
    monkeypatch.delenv("SITQ_DISABLED_PLUGINS", raising=False)
    rows = json.loads(_listed("backends", "--json"))
    lines = _listed("backends").splitlines()
    for row in rows:
        extra = row["schemes"][1:]
        at = next(i for i, line in enumerate(lines) if line.split()[:2] == [row["kind"], row["name"]])
        following = lines[at + 1] if at + 1 < len(lines) else ""
        if extra:
            assert following.strip() == f"also as URL schemes: {', '.join(extra)}", "\n".join(lines)
            where_column = lines[at].index(f" {row['dist']}") + 1
            assert len(following) - len(following.lstrip()) == where_column, "\n".join(lines)  # under the 3rd column
        else:
            assert not following.startswith(" "), "\n".join(lines)
    assert any("postgresql, postgres+asyncpg, postgresql+asyncpg" in line for line in lines), "\n".join(lines)
