"""Typed tasks (``@aiorq.job``) for the typed-task tests; workers import them by name, so this is a
module of tests/ (on the workers' PYTHONPATH). They enqueue on queue ``typed`` of the current
connection (``aiorq.push_connection``)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiorq

QUEUE = 'typed'


class OopsError(Exception):
    pass


@aiorq.job(QUEUE)
async def resize(path: str, width: int) -> bytes:
    """Pretend to resize the image at ``path``."""
    await asyncio.sleep(0)
    return f'{path}@{width}'.encode()


@aiorq.job(QUEUE, result_ttl=600)
def add(a: int, b: int = 0) -> int:
    return a + b


@aiorq.job(QUEUE)
async def explode(message: str) -> int:
    raise OopsError(message)


@aiorq.job(QUEUE)
async def nap(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


@aiorq.job(QUEUE, retry=aiorq.Retry(max=2))
def flaky(path: str, failures: int) -> str:
    """Fails its first ``failures`` attempts (one line each in the file ``path``), then succeeds."""
    attempts = Path(path)
    done = len(attempts.read_text().splitlines()) if attempts.exists() else 0
    with attempts.open('a') as f:
        f.write('attempt\n')
    if done < failures:
        raise OopsError(f'attempt {done + 1} fails')
    return f'succeeded on attempt {done + 1}'
