"""Enqueueing jobs: put ``mylib.add(1, 2)`` on 'my_queue' and wait for a worker's result.

The seed's first example, for rq 3.0. Run a stock worker beside it, with this directory on its
import path so that it can import ``mylib``::

    rq worker --path examples --url redis://127.0.0.1:6379/0 my_queue
    python examples/enqueue.py --url redis://127.0.0.1:6379/0

Exits 0 when the result is 3, 1 when it is wrong or does not come within ``--timeout`` seconds.
"""

from __future__ import annotations

import mylib
from _cli import result_is, run

import aiorq
from aiorq import Queue


async def main(url: str, timeout: float) -> int:
    redis = aiorq.from_url(url)
    try:
        queue = Queue('my_queue', connection=redis)
        job = await queue.enqueue(mylib.add, 1, 2)
        # No sleeping: wait on the job's results stream until the worker writes to it.
        if not await result_is(job, 3, timeout):
            return 1
        print('Well done, Turner!')
        return 0
    finally:
        await redis.aclose()


if __name__ == '__main__':
    run('Enqueue mylib.add(1, 2) and wait for its result.', main)
