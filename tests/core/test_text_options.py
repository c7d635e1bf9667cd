"""Options given as text (URL query, environment) reach a plugin backend's __init__ as the types it declares."""

from __future__ import annotations

import pytest

from sitq_core.errors import ValidationError
from sitq_core.urls import parse_backend_url
from sitq_dictstore import DictStoreBackend


class Tunable(DictStoreBackend):
    def __init__(
        self,
        store: str = "default",
        fsync: bool = True,
        max_items: int = 10,
        ratio: float | None = None,
        label: str = "x",
        untyped=3,  # type: ignore[no-untyped-def]
    ) -> None:
        super().__init__(store)
        self.fsync, self.max_items, self.ratio, self.label, self.untyped = fsync, max_items, ratio, label, untyped


def test_text_values_become_the_declared_types() -> None:
    url = parse_backend_url("dictstore://?fsync=false&max_items=5&ratio=0.5&label=7&untyped=9&store=s")
    backend = Tunable.from_url(url)
    assert (backend.fsync, backend.max_items, backend.ratio, backend.label, backend.untyped) == (False, 5, 0.5, "7", 9)
    assert backend.store == "s"
    same = Tunable.from_config({"fsync": True, "max_items": 2})  # real values pass unchanged
    assert (same.fsync, same.max_items) == (True, 2)


@pytest.mark.parametrize(
    ("option", "text", "expected"),
    [("fsync", "maybe", "true or false"), ("max_items", "5.5", "an integer"), ("ratio", "half", "a number")],
)
def test_text_that_does_not_convert_names_the_option(option: str, text: str, expected: str) -> None:
    with pytest.raises(ValidationError) as info:  # a bad value, like the constructor's own checks
        Tunable.from_config({option: text})
    assert info.value.parameter == option and expected in str(info.value) and repr(text) in str(info.value)
