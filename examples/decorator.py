"""The ``@job`` decorator: ``await mylib.summator.delay(1, 2)`` and wait for a worker's result.

``mylib.summator`` is decorated with ``@aiorq.job('my_queue')`` and no connection, so ``delay``
uses the current one, set here with ``aiorq.push_connection``. Run a stock worker beside it::

    rq worker --path examples --url redis://127.0.0.1:6379/0 my_queue
    python examples/decorator.py --url redis://127.0.0.1:6379/0

Exits 0 when the result is 3, 1 when it is wrong or does not come within ``--timeout`` seconds.
"""

from __future__ import annotations

import mylib
from _cli import result_is, run

import aiorq


async def main(url: str, timeout: float) -> int:
    redis = aiorq.from_url(url)
    aiorq.push_connection(redis)
    try:
        job = await mylib.summator.delay(1, 2)
        if not await result_is(job, 3, timeout):
            return 1
        print('Well done, Turner!')
        return 0
    finally:
        aiorq.pop_connection()
        await redis.aclose()


if __name__ == '__main__':
    run('Enqueue mylib.summator(1, 2) with .delay and wait for its result.', main)
