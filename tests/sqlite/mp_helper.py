"""Child-process programs for test_processes.py (run as ``python mp_helper.py MODE PATH ...``)."""

from __future__ import annotations

import asyncio
import json
import sys

from sitq_core.models import Task, new_id
from sitq_sqlite import SQLiteBackend


async def churn(path: str, count: int, name: str) -> None:
    """Enqueue ``count`` tasks in small batches while reserving and completing whatever is due."""
    backend = SQLiteBackend(path, busy_timeout=30.0)
    reserved: list[str] = []
    async with backend:
        enqueued = 0
        while enqueued < count:
            batch = [Task(id=new_id(), payload=name.encode()) for _ in range(min(5, count - enqueued))]
            await backend.enqueue_many(batch)
            enqueued += len(batch)
            for lease in await backend.reserve(worker_id=name, limit=3, lease_seconds=600):
                reserved.append(lease.id)
                assert await backend.complete(lease, name.encode())
        while True:
            leases = await backend.reserve(worker_id=name, limit=4, lease_seconds=600)
            if not leases:
                break
            for lease in leases:
                reserved.append(lease.id)
                assert await backend.complete(lease, name.encode())
    print(json.dumps(reserved))


async def on_signal(path: str, action: str, task_id: str) -> None:
    """Print 'ready', wait for a line on stdin, then enqueue a task or complete a reserved one."""
    backend = SQLiteBackend(path)
    async with backend:
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        if action == "enqueue":
            await backend.enqueue(Task(id=task_id, payload=b"from another process"))
        else:
            (lease,) = await backend.reserve(worker_id="child", limit=1, lease_seconds=60)
            assert lease.id == task_id
            assert await backend.complete(lease, b"done elsewhere")
    print("done", flush=True)


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "churn":
        asyncio.run(churn(sys.argv[2], int(sys.argv[3]), sys.argv[4]))
    else:
        asyncio.run(on_signal(sys.argv[2], mode, sys.argv[3]))
