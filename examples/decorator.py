"""The ``@job`` decorator: ``await mylib.summator.delay(1, 2)`` and wait for a worker's result.

``mylib.summator`` is decorated with ``@aiorq.job('my_queue')`` and no connection, so ``delay``
uses the current one, set here with ``aiorq.push_connection``. Run a stock worker beside it::

    rq worker --path examples --url redis://127.0.0.1:6379/0 my_queue
    python examples/decorator.py --url redis://127.0.0.1:6379/0

Exits 0 when the result is 3, 1 when it is wrong or does not come within ``--timeout`` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

import mylib

import aiorq


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Enqueue mylib.summator(1, 2) with .delay and wait for its result.')
    parser.add_argument(
        '--url',
        default=os.environ.get('RQ_REDIS_URL') or os.environ.get('REDIS_URL') or 'redis://127.0.0.1:6379/0',
        help='Redis URL (default: $RQ_REDIS_URL, $REDIS_URL, then redis://127.0.0.1:6379/0)',
    )
    parser.add_argument('--timeout', type=float, default=30, help='seconds to wait for the result (default 30)')
    return parser.parse_args()


async def main(url: str, timeout: float) -> int:
    redis = aiorq.from_url(url)
    aiorq.push_connection(redis)
    try:
        job = await mylib.summator.delay(1, 2)
        latest = await job.latest_result(timeout=timeout)
        if latest is None:
            print(f'No result for job {job.id} within {timeout:g} s: is a worker on my_queue?', file=sys.stderr)
            return 1
        result = await job.result
        if result != 3:
            print(f'{result!r} is not equal 3 ({latest.type.name}: {latest.exc_string})', file=sys.stderr)
            return 1
        print('Well done, Turner!')
        return 0
    finally:
        aiorq.pop_connection()
        await redis.aclose()


if __name__ == '__main__':
    args = parse_args()
    sys.exit(asyncio.run(main(args.url, args.timeout)))
