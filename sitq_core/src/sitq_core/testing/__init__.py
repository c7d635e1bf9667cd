"""sitq's backend conformance kit.

A backend author writes one test module::

    import pytest
    from sitq_core.testing import BackendSuite

    class TestMyBackend(BackendSuite):
        @pytest.fixture
        def backend_factory(self, tmp_path):
            return lambda: MyBackend(tmp_path / "db")

``backend_factory`` returns a callable building a new, unconnected backend on
one fresh store per test (or the same instance when the store cannot be
shared). Each ``*Contract`` class checks one area of
:class:`sitq_core.backend.Backend`; a failure message starts with the
contract's name and states the broken promise.
"""

from __future__ import annotations

try:
    import pytest
    import pytest_asyncio  # noqa: F401  (the kit's fixtures need it)
except ModuleNotFoundError as exc:  # sitq-core installed without its testing extra
    raise ModuleNotFoundError(
        f"sitq_core.testing needs pytest and pytest-asyncio, which come with sitq-core's testing extra: "
        f"pip install 'sitq-core[testing]' (missing: {exc.name})",
        name=exc.name,
    ) from exc

pytest.register_assert_rewrite("sitq_core.testing.suite")

from ..backend import Capability  # noqa: E402
from .clock import FakeClock  # noqa: E402
from .fixtures import BackendFactory, BackendFixtures, OpenBackend, requires  # noqa: E402
from .plugin_check import check_plugin  # noqa: E402
from .suite import (  # noqa: E402
    CONTRACTS,
    BackendSuite,
    BadInputContract,
    CancelContract,
    ConcurrencyContract,
    EnqueueContract,
    ExchangeContract,
    LeaseContract,
    LifecycleContract,
    NotifyContract,
    ReserveContract,
    ResultContract,
    RetryContract,
    StatsContract,
)

#: Bumped when contracts are added or tightened; pin your sitq-core range accordingly.
SUITE_VERSION = 8

__all__ = [
    "CONTRACTS",
    "SUITE_VERSION",
    "BackendFactory",
    "BackendFixtures",
    "BackendSuite",
    "BadInputContract",
    "CancelContract",
    "Capability",
    "ConcurrencyContract",
    "EnqueueContract",
    "ExchangeContract",
    "FakeClock",
    "LeaseContract",
    "LifecycleContract",
    "NotifyContract",
    "OpenBackend",
    "ReserveContract",
    "ResultContract",
    "RetryContract",
    "StatsContract",
    "check_plugin",
    "requires",
]
