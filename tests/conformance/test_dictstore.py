"""The example third-party backend passes the whole conformance kit."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from sitq_core.testing import BackendSuite
from sitq_dictstore import DictStoreBackend


class TestDictStoreBackend(BackendSuite):
    @pytest.fixture
    def backend_factory(self) -> Callable[[], DictStoreBackend]:
        store = uuid.uuid4().hex  # a fresh store per test, shared by the instances of one test
        return lambda: DictStoreBackend(store=store)
