"""The worker's timing and size limits, in one place.

Modules read ``_FINAL_REPORT_TIMEOUT`` and ``_MAX_PENDING_RESULT_BYTES`` as ``limits.<name>``, so a test
can change them with one patch of this module.
"""

from __future__ import annotations

_MAX_FINISH_BATCH = 512
# bytes of results waiting to be stored (returned, not yet stored) above which the worker starts no task
# (backlog.py); a finish batch also stops taking outcomes once it carries this much. One larger result goes alone.
_MAX_PENDING_RESULT_BYTES = 64 << 20
_MAX_REPORT_FAILURES = 7
# bytes of a result above which a report the store refuses for want of room (a full disk) is replaced by the task
# failing for that reason; a smaller one is retried as any failed report is (its failure would take as much room)
_SMALL_RESULT_BYTES = 4096
_CANCEL_CHECK = 0.25  # seconds: how often tasks waiting for a slot are checked for a cancel request
# seconds: how often tasks held that long (running ones) are checked for a cancel request between renewals;
# short tasks end before they are ever checked, so a drain of quick tasks pays nothing for it
_RUNNING_CANCEL_CHECK = 0.5
# up to this many tasks, a cancel check between renewals reads each task instead of renewing every lease
_CANCEL_READS_MAX = 8
# seconds a stopping worker waits for the backend to take its last outcomes: a healthy store takes them in
# milliseconds; a frozen one (a network partition with no command timeout) must not hold the stop for good
_FINAL_REPORT_TIMEOUT = 10.0  # shared by all the backend calls of one stop (give-backs, last outcomes)
_FINAL_MINIMUM = 0.5  # seconds each such call gets even when the budget is spent (a healthy store needs ms)
# function names shared by calls of many modules: such tasks always load on a thread (one hop per batch)
_WRAPPERS = ("functools:",)
_MAX_SYNC_BATCH = 32
_ADAPTIVE_PREFETCH_MAX = 256
_FAILING_LOG_EVERY = 60.0  # seconds between two log lines about a store that keeps failing
_IDS_NAMED = 10  # task ids named in a line about outcomes given up on or left unreported (the rest counted)
_LEASE_TRUST = 0.9  # of a lease counted on without a renewal (its clock started a little before we got it)
_CANCEL_GRACE = 2.0  # seconds stop() waits for a cancelled background loop to end
# seconds a stop that cancels running async tasks waits for them to end before giving them back: one that
# returns meanwhile (it had finished, or swallowed its cancel) is reported instead; most end at their next step
_ABANDON_GRACE = 0.1
_OTHER_LOOP_CHECK = 0.1  # seconds between looks at the worker's loop from a stop() awaited on another loop
# seconds a suspect is kept off this worker while tasks run here (given back: held unstarted, it would count an
# expiry if one of them killed the worker); then it starts beside them: one may wait for work reserved only here
_SUSPECT_WAIT = 5.0
# seconds a suspect runs alone: a poison pill kills its worker early in its run (a crash on its input, an
# allocation the OOM killer stops); one that kills later takes what was reserved beside it along, and each of
# those comes back a suspect itself, so max_lease_expiries still ends the one present at every crash
_SUSPECT_ALONE = 2.0
_ADAPTIVE_PREFETCH_WINDOW = 0.1  # seconds of work reserved ahead when tasks are short
# seconds a batch of sync tasks runs before the loop is told of each member's return (reported then, not
# when the whole batch ends); a batch of quick tasks is over by then and wakes the loop once
_BATCH_WATCH_AFTER = 0.01
# seconds a batch of sync tasks runs before a slot that is free takes its tasks not started yet: a task batched
# behind a slow one must not wait for it while slots idle (a batch of quick tasks is over by then, or nearly)
_BATCH_HANDOFF_AFTER = 0.01
_GIVE_BACK_FIRST_PAUSE = 0.05  # seconds before a failed give-back (a store locked past busy_timeout) is tried again
_GIVE_BACK_MAX_PAUSE = 1.0  # ... doubling up to this, while the worker runs and the tasks' leases hold
