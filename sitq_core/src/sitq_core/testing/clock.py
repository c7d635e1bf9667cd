"""A controllable UTC clock, so lease, ETA and purge tests never sleep."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

__all__ = ["DEFAULT_START", "FakeClock"]

#: Far from the real "now" (and with microseconds), so a backend that reads the
#: wall clock instead of ``self.now()`` or truncates times fails loudly.
DEFAULT_START = datetime(2030, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)


class FakeClock:
    """A callable returning a fixed aware UTC time that only moves when told.

    Install it on a backend with ``backend.clock = clock``; ``Backend.now()``
    then reads it.
    """

    def __init__(self, start: datetime = DEFAULT_START) -> None:
        self._now = _aware(start, "start")

    def __call__(self) -> datetime:
        return self._now

    def now(self) -> datetime:
        """The current fake time."""
        return self._now

    def advance(self, seconds: float = 0.0) -> datetime:
        """Move forward by ``seconds`` and return the new time."""
        if seconds < 0:
            raise ValueError("FakeClock only moves forward")
        self._now += timedelta(seconds=seconds)
        return self._now

    def set(self, when: datetime) -> None:
        """Jump to ``when`` (an aware datetime)."""
        self._now = _aware(when, "when")

    def __repr__(self) -> str:
        return f"FakeClock({self._now.isoformat()})"


def _aware(value: datetime, name: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"FakeClock {name} must be timezone-aware")
    return value.astimezone(UTC)
