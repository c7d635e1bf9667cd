"""Every public name of the facade appears in the API reference (docs/reference/api.md)."""

from __future__ import annotations

import re
from pathlib import Path

import sitq

API = Path(__file__).resolve().parents[2] / "docs" / "reference" / "api.md"


def test_every_name_in_sitq_all_is_in_the_api_reference() -> None:
    text = API.read_text()
    missing = [name for name in sitq.__all__ if not re.search(rf"(?<!\w){re.escape(name)}(?!\w)", text)]
    assert missing == [], f"public names missing from docs/reference/api.md: {missing}"


def test_dir_of_the_facade_shows_its_public_names_and_no_helpers() -> None:
    public = {name for name in dir(sitq) if not name.startswith("_")}
    assert public == {name for name in sitq.__all__ if not name.startswith("_")}
