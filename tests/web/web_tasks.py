"""Job functions of the dashboard's tests (workers import them with ``--path tests/web``)."""

from __future__ import annotations

import asyncio
import time


async def hold(flag: str, limit: float = 60) -> str:
    """Runs until the Redis key ``flag`` exists (or ``limit`` seconds pass)."""
    import aiorq

    job = aiorq.get_current_job()
    assert job is not None
    deadline = time.monotonic() + limit
    while not await job.connection.exists(flag) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return 'released'


def hold_sync(flag: str, limit: float = 60) -> str:
    """:func:`hold` for stock rq workers."""
    import rq

    job = rq.get_current_job()
    assert job is not None
    deadline = time.monotonic() + limit
    while not job.connection.exists(flag) and time.monotonic() < deadline:
        time.sleep(0.05)
    return 'released'


def fail(message: str = 'boom') -> None:
    raise ValueError(message)


def noop(n: int = 0) -> int:
    return n


async def fail_unless(flag: str) -> str:
    """Fails while the Redis key ``flag`` is missing."""
    import aiorq

    job = aiorq.get_current_job()
    assert job is not None
    if not await job.connection.exists(flag):
        raise RuntimeError(f'{flag} is not set yet')
    return 'ran'
