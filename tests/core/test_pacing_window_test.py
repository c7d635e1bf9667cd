"""The adaptive pacer tests whether its pause holds work back (see sitq_core/pacing.py), on a clock we control."""

from __future__ import annotations

from collections.abc import Callable

from sitq_core.pacing import CommitPacer

_COMMIT = 0.0005  # seconds per commit: an adaptive window of 10 ms


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _run(pacer: CommitPacer, clock: Clock, carried_after: Callable[[float], int], commits: int) -> list[bool]:
    """``commits`` worker cycles; each commit carries ``carried_after(seconds since the one before)``."""
    paced: list[bool] = []
    last = clock.now
    for _ in range(commits):
        wait = pacer.take()
        if wait > 0:
            clock.now += wait
            assert pacer.take() == 0.0
        clock.now += _COMMIT
        pacer.observe(_COMMIT, carried_after(clock.now - last))
        last = clock.now
        paced.append(wait > 0)
    return paced


def _producer(rate: float) -> Callable[[float], int]:
    """Work that arrives on its own at ``rate`` tasks a second: a commit carries what came meanwhile."""
    return lambda seconds: max(1, round(rate * seconds))


def _clients(count: int, overhead: float = 0.0) -> Callable[[float], int]:
    """``count`` clients that each wait for their result before the next enqueue.

    Each round trip takes ``overhead`` (their own enqueues, the task) plus about two pauses (the claim's
    and the finish's), so a commit carries a claim and a finish from the share of clients whose round
    trip ended in its pause: as much however long the pause when ``overhead`` is 0, and more with a
    longer pause, but never at a higher rate, when it is not.
    """
    return lambda seconds: max(1, round(2 * count * seconds / (overhead + 2 * seconds)))


def test_work_that_arrives_on_its_own_stays_paced() -> None:
    clock = Clock()
    pacer = CommitPacer(None, clock=clock)
    paced = _run(pacer, clock, _producer(3000.0), 2000)
    assert sum(paced[10:]) >= 0.95 * len(paced[10:])
    assert pacer.window > 0.005  # the full window again after each test


def test_clients_waiting_for_their_results_are_not_paced_for_long() -> None:
    clock = Clock()
    pacer = CommitPacer(None, clock=clock)
    paced = _run(pacer, clock, _clients(4), 6000)
    # the tests fail and the unpaced runs grow: 64, 512, 4096 commits; a test is 16 paced commits
    assert sum(paced[-4096:]) <= 16
    assert sum(paced) < 0.05 * len(paced)


def test_many_clients_with_longer_round_trips_are_not_paced_for_long() -> None:
    clock = Clock()
    pacer = CommitPacer(None, clock=clock)
    paced = _run(pacer, clock, _clients(16, overhead=0.01), 6000)
    assert sum(paced) < 0.05 * len(paced)


def test_pacing_comes_back_when_a_producer_starts_after_the_clients() -> None:
    clock = Clock()
    pacer = CommitPacer(None, clock=clock)
    _run(pacer, clock, _clients(4), 600)
    paced = _run(pacer, clock, _producer(3000.0), 6000)
    assert sum(paced[-1000:]) >= 950  # tested again after the unpaced run, and kept


def test_a_window_the_user_set_is_not_tested() -> None:
    clock = Clock()
    pacer = CommitPacer(0.01, clock=clock)
    paced = _run(pacer, clock, _clients(4), 600)
    assert sum(paced[10:]) == len(paced[10:])
