"""Job dependencies: ``job_summator`` adds the results of two jobs once both have finished.

``job2`` waits for ``job1`` and ``job3`` for ``job2`` (``depends_on``); the worker releases each
one when its dependency finishes. ``job3`` runs ``mylib.job_summator`` in the (synchronous) stock
worker, which reads the two results with rq's own API. Run a stock worker beside it::

    rq worker --path examples --url redis://127.0.0.1:6379/0 my_queue
    python examples/dependencies.py --url redis://127.0.0.1:6379/0

Exits 0 when job3's result is 6, 1 when it is wrong or does not come within ``--timeout`` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

import mylib

import aiorq
from aiorq import Queue


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Enqueue a chain of three dependent jobs and wait for the last.')
    parser.add_argument(
        '--url',
        default=os.environ.get('RQ_REDIS_URL') or os.environ.get('REDIS_URL') or 'redis://127.0.0.1:6379/0',
        help='Redis URL (default: $RQ_REDIS_URL, $REDIS_URL, then redis://127.0.0.1:6379/0)',
    )
    parser.add_argument('--timeout', type=float, default=30, help='seconds to wait for the result (default 30)')
    return parser.parse_args()


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
        latest = await job3.latest_result(timeout=timeout)
        if latest is None:
            print(f'No result for job {job3.id} within {timeout:g} s: is a worker on my_queue?', file=sys.stderr)
            return 1
        result = await job3.result
        if result != 6:
            print(f'{result!r} is not equal 6 ({latest.type.name}: {latest.exc_string})', file=sys.stderr)
            return 1
        print(f'{await job1.result} + {await job2.result} = {result}')
        return 0
    finally:
        await redis.aclose()


if __name__ == '__main__':
    args = parse_args()
    sys.exit(asyncio.run(main(args.url, args.timeout)))
