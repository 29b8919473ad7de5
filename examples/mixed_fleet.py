"""A mixed fleet: a stock ``rq worker`` and an ``aiorq worker`` drain one queue, fed by both clients.

The script starts both workers on 'my_queue' (with this directory on their import path), waits
until both are registered, enqueues ``mylib.slow_add`` jobs alternately with aiorq and with stock
rq's blocking client, awaits every result, prints which worker ran how many jobs, and shuts both
workers down with rq's shutdown command::

    python examples/mixed_fleet.py --url redis://127.0.0.1:6379/0

Exits 0 when every result is right and each kind of worker ran some of the jobs, 1 otherwise.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import mylib
import redis
import rq
from _cli import result_is, run

import aiorq
from aiorq import Job, Queue

EXAMPLES = Path(__file__).resolve().parent
JOBS = 16


def start_workers(url: str) -> dict[str, subprocess.Popen[bytes]]:
    """One worker of each kind, named after it: stock rq (forks a work horse per job) and aiorq
    (two jobs at once; the default 16 would take nearly every job before rq's next pop)."""
    common = ['--url', url, '--path', str(EXAMPLES), '--logging_level', 'WARNING']
    commands = {
        'rq-worker': [sys.executable, '-m', 'rq.cli', 'worker', '--name', 'rq-worker', *common, 'my_queue'],
        'aiorq-worker': [
            *[sys.executable, '-m', 'aiorq_worker', 'worker', '--name', 'aiorq-worker', *common],
            *['--concurrency', '2', 'my_queue'],
        ],
    }
    return {name: subprocess.Popen(command) for name, command in commands.items()}


async def stop_workers(redis_client: redis.asyncio.Redis, procs: dict[str, subprocess.Popen[bytes]]) -> None:
    """rq's shutdown command (both kinds obey it; a warm shutdown), then wait for the processes."""
    for name in procs:
        await aiorq.send_shutdown_command(redis_client, name)
    for proc in procs.values():
        try:
            await asyncio.to_thread(proc.wait, 20)
        except subprocess.TimeoutExpired:
            proc.kill()
            await asyncio.to_thread(proc.wait)


async def main(url: str, timeout: float) -> int:
    client = aiorq.from_url(url)
    sync_client = redis.Redis.from_url(url)  # stock rq's side
    procs = start_workers(url)
    try:
        deadline = time.monotonic() + timeout
        while await aiorq.count_workers(client, queue='my_queue') < 2:
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs.values()):
                print('the workers did not start', file=sys.stderr)
                return 1
            await asyncio.sleep(0.1)

        queue = Queue('my_queue', connection=client)
        stock_queue = rq.Queue('my_queue', connection=sync_client)
        jobs: list[Job] = []
        for i in range(JOBS):
            if i % 2:
                stock_job = await asyncio.to_thread(stock_queue.enqueue, mylib.slow_add, i, i)
                jobs.append(await Job.fetch(stock_job.id, connection=client))
            else:
                jobs.append(await queue.enqueue(mylib.slow_add, i, i))

        for i, job in enumerate(jobs):
            if not await result_is(job, 2 * i, timeout):
                return 1
        ran_by = Counter([(await Job.fetch(job.id, connection=client)).worker_name for job in jobs])
        print(f'{JOBS} jobs enqueued by aiorq and rq, all results right; ran by: {dict(sorted(ran_by.items()))}')
        return 0 if set(ran_by) == set(procs) else 1
    finally:
        await stop_workers(client, procs)
        sync_client.close()
        await client.aclose()


if __name__ == '__main__':
    run('Drain jobs from both clients with a stock rq worker and an aiorq worker.', main)
