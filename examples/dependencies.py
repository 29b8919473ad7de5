"""Job dependencies: ``job_summator`` adds the results of two jobs once both have finished.

``job2`` waits for ``job1`` and ``job3`` for ``job2`` (``depends_on``); the worker releases each
one when its dependency finishes. ``job3`` runs ``mylib.job_summator`` in the (synchronous) stock
worker, which reads the two results with rq's own API. Run a stock worker beside it::

    rq worker --path examples --url redis://127.0.0.1:6379/0 my_queue
    python examples/dependencies.py --url redis://127.0.0.1:6379/0

Exits 0 when job3's result is 6, 1 when it is wrong or does not come within ``--timeout`` seconds.
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
        job1 = await queue.enqueue(mylib.add, 1, 2)
        job2 = await queue.enqueue(mylib.add, 1, 2, depends_on=job1)
        job3 = await queue.enqueue(mylib.job_summator, job1.id, job2.id, depends_on=job2)
        status = await job3.get_status()
        print(f'job3 is {status.value if status else status} until job2 finishes')
        # job3 has no result until job1 and job2 have run, so this wait covers the whole chain.
        if not await result_is(job3, 6, timeout):
            return 1
        print(f'{await job1.result} + {await job2.result} = {await job3.result}')
        return 0
    finally:
        await redis.aclose()


if __name__ == '__main__':
    run('Enqueue a chain of three dependent jobs and wait for the last.', main)
