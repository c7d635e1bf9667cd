"""forks.ForkGate: a fork waits for calls inside the gate, keeps new ones out, and never waits forever."""

from __future__ import annotations

import logging
import threading

import pytest

from sitq_core.forks import ForkGate


def test_a_fork_waits_for_the_calls_inside_and_holds_new_ones_until_it_is_done() -> None:
    gate = ForkGate(wait=30)
    gate.enter()
    closed = threading.Event()

    def fork() -> None:
        gate.close_for_fork()
        closed.set()

    forker = threading.Thread(target=fork)
    forker.start()
    assert not closed.wait(0.1), "the fork went ahead while a call was inside"
    gate.leave()
    assert closed.wait(10), "the fork kept waiting after the last call left"
    assert gate.quiet

    entered = threading.Event()
    newcomer = threading.Thread(target=lambda: (gate.enter(), entered.set()))
    newcomer.start()
    assert not entered.wait(0.1), "a call got in during the fork"
    gate.open_after_fork()
    assert entered.wait(10), "the call stayed out after the fork"
    assert not gate.quiet
    forker.join()
    newcomer.join()


def test_a_call_that_never_leaves_delays_a_fork_only_for_the_wait(caplog: pytest.LogCaptureFixture) -> None:
    gate = ForkGate(wait=0.2)
    gate.enter()  # stuck inside (a lock held by another process, say)
    with caplog.at_level(logging.WARNING, logger="sitq"):
        gate.close_for_fork()
    assert not gate.quiet, "a fork past its wait must not count as quiet (connections are in use)"
    assert "still run in other threads" in caplog.text
    gate.open_after_fork()


def test_a_child_starts_with_an_open_gate_whatever_the_parent_left_in_it() -> None:
    gate = ForkGate(wait=0.01)
    gate.enter()
    gate.close_for_fork()
    gate.reset_in_child()
    with gate.inside():
        pass
    gate.close_for_fork()
    assert gate.quiet
