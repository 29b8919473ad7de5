"""Progress: a job writes ``job.meta['progress']`` while it runs; this script reads it from outside.

``mylib.count_to(5, 0.3)`` saves its progress (20, 40, ... 100) after each step with
``await job.save_meta()``; meanwhile this script reads the job's meta and status every 50 ms and
prints each new value. Run a worker beside it (aiorq's, or stock rq's)::

    aiorq worker --path examples --url redis://127.0.0.1:6379/0 my_queue
    python examples/progress.py --url redis://127.0.0.1:6379/0

Exits 0 when progress was seen rising while the job ran and the result is right, 1 otherwise.
"""

from __future__ import annotations

import asyncio
import sys
import time

import mylib
from _cli import result_is, run

import aiorq
from aiorq import JobStatus, Queue

STEPS = 5


async def main(url: str, timeout: float) -> int:
    redis = aiorq.from_url(url)
    try:
        queue = Queue('my_queue', connection=redis)
        job = await queue.enqueue(mylib.count_to, STEPS, 0.3)
        seen: list[int] = []  # progress values read while the job was running
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = await job.get_status()
            if status not in (JobStatus.QUEUED, JobStatus.STARTED):
                break
            progress = (await job.get_meta()).get('progress')  # a fresh read of the meta field
            if status == JobStatus.STARTED and progress is not None and progress not in seen:
                seen.append(progress)
                print(f'{job.id}: {progress}%')
            await asyncio.sleep(0.05)  # meta is a plain field: reading it is polling
        if not await result_is(job, STEPS, timeout):
            return 1
        if len(seen) < 2 or seen != sorted(seen):
            print(f'progress seen while running: {seen}', file=sys.stderr)
            return 1
        print(f'progress seen while running: {seen}; finished with {(await job.get_meta())["progress"]}%')
        return 0
    finally:
        await redis.aclose()


if __name__ == '__main__':
    run('Enqueue a job that reports its progress, and follow it.', main)
