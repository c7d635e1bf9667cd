"""A reserver in its own process, for the kit's multi-process contract.

    python -m sitq_core.testing.process_reserver BACKEND_JSON FAKE_NOW_ISO WORKER_ID

``BACKEND_JSON`` is a URL or a config mapping (as JSON) that
``resolve_backend`` understands. The process connects, prints ``READY``,
waits for a line on stdin (so several start racing at the same moment),
then reserves two tasks at a time until none is due, completing each with
its own id as the value, and prints one JSON line: the ids it completed.
"""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import datetime

from ..config import resolve_backend
from .answers import check_answers
from .clock import FakeClock

__all__ = ["main"]

LEASE_SECONDS = 30.0


async def _drain(spec: object, now: datetime, worker_id: str) -> list[str]:
    backend = check_answers(resolve_backend(spec), "ConcurrencyContract")  # type: ignore[arg-type]
    backend.clock = FakeClock(now)
    done: list[str] = []
    async with backend:
        sys.stdout.write("READY\n")
        sys.stdout.flush()
        await asyncio.to_thread(sys.stdin.readline)
        while leases := await backend.reserve(worker_id=worker_id, limit=2, lease_seconds=LEASE_SECONDS):
            for lease in leases:
                if await backend.complete(lease, lease.id.encode()):
                    done.append(lease.id)
    return done


def main(argv: list[str]) -> int:
    """Run one reserver; the exit code is 0 when it drained without error."""
    spec = json.loads(argv[0])
    now = datetime.fromisoformat(argv[1])
    done = asyncio.run(_drain(spec, now, argv[2]))
    sys.stdout.write(json.dumps(done) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
