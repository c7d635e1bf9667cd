"""The kit's short per-call limits grow with SITQ_KIT_TIMEOUT, the documented knob for a slow CI machine."""

from __future__ import annotations

import pytest

from sitq_core.testing.suite import _support


@pytest.mark.parametrize(
    ("setting", "guard", "latency"),
    [(None, 5.0, 1.0), ("120", 5.0, 1.0), ("600", 25.0, 5.0), ("1", 5.0, 1.0)],
)
def test_per_call_limits_follow_the_kit_timeout(
    monkeypatch: pytest.MonkeyPatch, setting: str | None, guard: float, latency: float
) -> None:
    """Raised above its default (120 s) it stretches them in proportion; lowered, they keep their defaults."""
    if setting is None:
        monkeypatch.delenv("SITQ_KIT_TIMEOUT", raising=False)
    else:
        monkeypatch.setenv("SITQ_KIT_TIMEOUT", setting)
    assert (_support.guard(), _support.result_latency()) == (guard, latency)
