"""Options given as text (URL query, environment) reach a plugin backend's __init__ as the types it declares."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest

from sitq_core.errors import ValidationError
from sitq_core.urls import parse_backend_url
from sitq_dictstore import DictStoreBackend
from sitq_sqlite import SQLiteBackend


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


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("fsync", [1], "true or false"),
        ("fsync", 0.5, "true or false"),
        ("max_items", [5], "an integer"),
        ("max_items", 5.5, "an integer"),
        ("max_items", True, "an integer"),
        ("ratio", {"a": 1}, "a number"),
        ("ratio", False, "a number"),
        ("label", ["x"], "text"),
    ],
)
def test_a_value_of_another_type_names_the_option(option: str, value: object, expected: str) -> None:
    """A config mapping's non-text value was passed unchecked: fsync=[1] reached a bool parameter."""
    with pytest.raises(ValidationError) as info:
        Tunable.from_config({option: value})
    assert info.value.parameter == option and expected in str(info.value), info.value
    assert type(value).__name__ in str(info.value), info.value


def test_values_of_a_fitting_type_pass_unchanged() -> None:
    backend = Tunable.from_config({"fsync": False, "max_items": 3, "ratio": 2, "label": "y", "untyped": [1]})
    assert (backend.fsync, backend.max_items, backend.ratio, backend.label, backend.untyped) == (False, 3, 2, "y", [1])
    assert Tunable.from_config({"ratio": None, "max_items": 4.0}).ratio is None  # None where None is allowed


def test_a_secret_option_of_another_type_does_not_show_its_value() -> None:
    class Keyed(DictStoreBackend):
        def __init__(self, store: str = "default", api_key: int = 0) -> None:
            super().__init__(store)

    with pytest.raises(ValidationError) as info:
        Keyed.from_config({"api_key": ["hunter2"]})
    assert info.value.parameter == "api_key" and "hunter2" not in repr(info.value.__dict__) + str(info.value)


def test_any_real_number_fits_a_float_option() -> None:
    """Decimal and Fraction were refused by from_config for seconds options the constructors take them for."""
    assert Tunable.from_config({"ratio": Decimal("2.5")}).ratio == Decimal("2.5")
    assert Tunable.from_config({"ratio": Fraction(1, 4)}).ratio == Fraction(1, 4)
    backend = SQLiteBackend.from_config({"path": "unused.db", "busy_timeout": Decimal("2.5")})
    assert backend.busy_timeout == 2.5
