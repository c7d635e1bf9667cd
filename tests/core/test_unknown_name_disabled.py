"""An unknown backend name's close match among installed plugins that are disabled, and how they are disabled."""

from __future__ import annotations

import pytest

import sitq
from sitq import ConfigurationError, UnknownBackendError
from sitq_core.cli import main


@pytest.mark.parametrize(
    ("variable", "value", "typo", "meant", "dist"),
    [
        ("SITQ_LOAD_PLUGINS", "postgres", "sqlit:///x.db", "sqlite", "sitq-sqlite"),
        ("SITQ_DISABLED_PLUGINS", "sqlite", "sqlit:///x.db", "sqlite", "sitq-sqlite"),
        ("SITQ_DISABLED_PLUGINS", "postgres", "postgress://u@h/db", "postgres", "sitq-postgres"),
        ("SITQ_DISABLED_PLUGINS", "postgres", "postgresq://u@h/db", "postgresql", "sitq-postgres"),
        ("SITQ_DISABLED_PLUGINS", "dictstore", "dictstor", "dictstore", "sitq-dictstore"),
    ],
)
def test_a_typo_of_a_disabled_backend_suggests_it_and_says_how_it_is_disabled(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, typo: str, meant: str, dist: str
) -> None:
    """Before: "no backend named 'sqlit'. Installed: postgres." and no word of sitq-sqlite."""
    monkeypatch.setenv(variable, value)
    with pytest.raises(UnknownBackendError) as info:
        sitq.connect(typo)
    message = info.value.message
    if dist == "sitq-dictstore":  # not sitq's own: what it provides is unknown, so it is named as a plugin only
        assert f"The plugin {meant!r} ({dist}" in message and "Did you mean" not in message, message
    else:
        assert f"Did you mean {meant!r}?" in message, message
    assert dist in message and f"disabled by {variable}" in message, message
    assert meant not in (info.value.valid_options or [])  # it cannot be chosen as things are


def test_the_cli_suggests_the_disabled_backend(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SITQ_LOAD_PLUGINS", "postgres")
    assert main(["worker", "-b", "sqlit:///x.db"]) != 0
    err = capsys.readouterr().err
    assert "Did you mean 'sqlite'?" in err and "disabled by SITQ_LOAD_PLUGINS" in err, err


def test_an_enabled_close_name_is_still_suggested_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SITQ_DISABLED_PLUGINS", "postgres")
    with pytest.raises(ConfigurationError) as info:
        sitq.connect("sqlit:///x.db")
    assert "Did you mean 'sqlite'?" in info.value.message and "disabled" not in info.value.message.split("?")[1]
