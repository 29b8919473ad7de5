"""Fan-out: one job enqueues a group of jobs with ``enqueue_many`` and a job that joins them.

``mylib.sum_of_squares([1, ..., 5])`` runs in a worker, enqueues one ``square`` job per number as
one ``aiorq.Group`` and a ``total`` job that depends on all of them, and returns the ``total``
job's id; the worker releases ``total`` when the last square finished. Run a worker beside it
(aiorq's, or stock rq's: it runs the coroutine jobs with ``asyncio.run``)::

    aiorq worker --path examples --url redis://127.0.0.1:6379/0 my_queue
    python examples/fan_out.py --url redis://127.0.0.1:6379/0

Exits 0 when the total is 55, 1 when it is wrong or missing after ``--timeout`` seconds.
"""

from __future__ import annotations

import sys

import mylib
from _cli import result_is, run

import aiorq
from aiorq import Group, Job, Queue


async def main(url: str, timeout: float) -> int:
    redis = aiorq.from_url(url)
    try:
        queue = Queue('my_queue', connection=redis)
        fan_out = await queue.enqueue(mylib.sum_of_squares, [1, 2, 3, 4, 5])
        latest = await fan_out.latest_result(timeout=timeout)  # the id of the total job
        if latest is None or latest.type != aiorq.Result.Type.SUCCESSFUL:
            print(f'fan-out job {fan_out.id}: {latest!r}', file=sys.stderr)
            return 1
        total = await Job.fetch(str(latest.return_value), connection=redis)
        if not await result_is(total, 55, timeout):
            return 1
        group = await Group.fetch(total.args[0], connection=redis)
        squares = sorted([await job.result for job in await group.get_jobs()])
        print(f'the squares {squares} of {group!r} add up to {await total.result}')
        return 0 if squares == [1, 4, 9, 16, 25] else 1
    finally:
        await redis.aclose()


if __name__ == '__main__':
    run('A job that fans out into a group of jobs, and a job that adds up their results.', main)
