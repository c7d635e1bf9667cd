"""CommitPacer stops pausing while its pauses group nothing (a client that waits for each result)."""

from __future__ import annotations

import itertools

from sitq_core.pacing import CommitPacer


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _commit(pacer: CommitPacer, clock: Clock, carried: int) -> bool:
    """One worker cycle: wait when told to, commit; True when it was paced."""
    wait = pacer.take()
    if wait > 0:
        clock.now += wait
        assert pacer.take() == 0.0
    clock.now += 0.001  # the commit, and the client's next step (far shorter than the window)
    pacer.observe(0.0005, carried)
    return wait > 0


def _exhausted(clock: Clock, window: float = 0.02) -> CommitPacer:
    pacer = CommitPacer(window, burst=3, clock=clock)
    for _ in range(3):
        assert pacer.take() == 0.0
    return pacer


def test_a_paced_commit_that_carried_one_task_lets_the_next_commits_through() -> None:
    clock = Clock()
    pacer = _exhausted(clock)
    assert _commit(pacer, clock, carried=1)  # the pause gathered nothing
    assert not any(_commit(pacer, clock, carried=1) for _ in range(8))
    assert _commit(pacer, clock, carried=1)  # checks again: still nothing, so a longer unpaced run
    assert not any(_commit(pacer, clock, carried=1) for _ in range(64))
    assert _commit(pacer, clock, carried=1)


def test_the_unpaced_runs_stop_growing_at_a_bound() -> None:
    clock = Clock()
    pacer = _exhausted(clock)
    paced = [_commit(pacer, clock, carried=1) for _ in range(5000)]
    positions = [i for i, p in enumerate(paced) if p]
    gaps = [b - a for a, b in itertools.pairwise(positions)]
    assert max(gaps) == 513  # 512 unpaced commits, then a paced one


def test_a_commit_that_carries_several_turns_pacing_back_on() -> None:
    clock = Clock()
    pacer = _exhausted(clock)
    assert _commit(pacer, clock, carried=1)
    assert not _commit(pacer, clock, carried=1)
    assert not _commit(pacer, clock, carried=5)  # work arrives faster than single commits
    assert _commit(pacer, clock, carried=5)  # paced again at once
    assert _commit(pacer, clock, carried=5)  # and it gathered: stays paced


def test_without_counts_pacing_is_unchanged() -> None:
    clock = Clock()
    pacer = _exhausted(clock)
    for _ in range(20):
        wait = pacer.take()
        assert wait > 0
        clock.now += wait
        assert pacer.take() == 0.0
        pacer.observe(0.0005)
