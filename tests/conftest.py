"""Shared fixtures: a clean plugin manager per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sitq_core.plugins import reset_plugin_manager

import sitq_test_tasks as tasks


@pytest.fixture(autouse=True)
def _fresh_plugin_manager() -> Iterator[None]:
    """Each test discovers plugins anew, so a test's registrations never leak into another."""
    reset_plugin_manager()
    yield
    reset_plugin_manager()


@pytest.fixture
def gate() -> Iterator[None]:
    """``tasks.wait_for_gate`` calls wait until the test sets ``tasks.GATE``; what still waits goes at the end."""
    tasks.GATE.clear()
    tasks.GATE_REACHED.clear()
    yield
    tasks.GATE.set()  # a task still waiting ends
