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
    quiet: list[bool] = []

    def fork() -> None:
        gate.close_for_fork()
        quiet.append(gate.quiet)  # as the forking thread's own hooks see it
        closed.set()

    forker = threading.Thread(target=fork)
    forker.start()
    assert not closed.wait(0.1), "the fork went ahead while a call was inside"
    gate.leave()
    assert closed.wait(10), "the fork kept waiting after the last call left"
    assert quiet == [True]
    assert not gate.try_enter(), "a caller that must not block is turned away while a fork is pending"

    entered = threading.Event()
    newcomer = threading.Thread(target=lambda: (gate.enter(), entered.set()))
    newcomer.start()
    assert not entered.wait(0.1), "a call got in during the fork"
    gate.open_after_fork()
    assert entered.wait(10), "the call stayed out after the fork"
    forker.join()
    newcomer.join()


def test_with_two_forks_at_once_the_door_opens_when_the_last_is_done() -> None:
    gate = ForkGate(wait=30)
    gate.close_for_fork()  # thread A's fork
    second = threading.Thread(target=gate.close_for_fork)  # thread B's, its hooks overlapping A's
    second.start()
    second.join(10)
    gate.open_after_fork()  # A is done; B is still between its hooks and its fork
    assert not gate.try_enter(), "a call got in while the second fork was still pending"
    gate.open_after_fork()
    assert gate.try_enter()
    gate.leave()


def test_a_call_that_steps_out_lets_a_fork_through() -> None:
    gate = ForkGate(wait=30)
    gate.enter()
    forked = threading.Event()

    def fork() -> None:
        gate.close_for_fork()
        forked.set()
        gate.open_after_fork()

    forker = threading.Thread(target=fork)
    with gate.stepped_out():  # a busy-wait sleep: this call holds no database lock now
        forker.start()
        assert forked.wait(10), "the fork waited for a call that had stepped out"
    forker.join(10)
    gate.leave()


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
    gate.open_after_fork()


def test_a_finalizer_entering_the_gate_while_its_thread_leaves_it_does_not_deadlock() -> None:
    """GC may run an inline connection's finalizer (which calls try_enter) inside leave(), on the thread that holds
    the gate's lock: with a plain lock that thread hung, and the next fork with it (seen in a CI run)."""
    gate = ForkGate(wait=0.1)
    outcome: list[bool] = []

    def leave_with_a_finalizer_inside() -> None:
        gate.enter()
        with gate._lock:  # where leave() is when a collection runs the finalizer
            entered = gate.try_enter()
            if entered:
                gate.leave()
            outcome.append(entered)
        gate.leave()

    thread = threading.Thread(target=leave_with_a_finalizer_inside, daemon=True)
    thread.start()
    thread.join(5)
    assert not thread.is_alive(), "the thread deadlocked on the gate's own lock"
    assert outcome == [True]
