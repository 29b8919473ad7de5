"""What the example scripts share: their command line and the check of a job's result."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import aiorq


def run(description: str, main: Callable[[str, float], Awaitable[int]]) -> None:
    """Parse ``--url``/``--timeout`` and exit with ``main``'s code."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        '--url',
        default=os.environ.get('RQ_REDIS_URL') or os.environ.get('REDIS_URL') or 'redis://127.0.0.1:6379/0',
        help='Redis URL (default: $RQ_REDIS_URL, $REDIS_URL, then redis://127.0.0.1:6379/0)',
    )
    parser.add_argument('--timeout', type=float, default=30, help='seconds to wait for the result (default 30)')
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.url, args.timeout)))


async def result_is(job: aiorq.Job, expected: Any, timeout: float) -> bool:
    """Wait (no sleeping: a blocking read of the job's results stream) and compare."""
    latest = await job.latest_result(timeout=timeout)
    if latest is None:
        print(f'No result for job {job.id} within {timeout:g} s: is a worker on my_queue?', file=sys.stderr)
        return False
    result = await job.result
    if result != expected:
        print(f'{result!r} is not equal {expected!r} ({latest.type.name}: {latest.exc_string})', file=sys.stderr)
        return False
    return True
