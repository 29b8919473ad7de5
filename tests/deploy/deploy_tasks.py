"""Job functions for tests/deploy (workers import them from this directory)."""

from __future__ import annotations

import asyncio
import time

import rq

import aiorq


def add(a: int, b: int) -> int:
    return a + b


async def async_add(a: int, b: int) -> int:
    await asyncio.sleep(0)
    return a + b


def slow_add(a: int, b: int, seconds: float) -> int:
    time.sleep(seconds)
    return a + b


async def async_slow_add(a: int, b: int, seconds: float) -> int:
    await asyncio.sleep(seconds)
    return a + b


def note_progress(value: int) -> int:
    """A plain job writing through rq's current job (the worker's blocking client)."""
    job = rq.get_current_job()
    assert job is not None
    job.meta['progress'] = value
    job.save_meta()
    return value


async def async_note_progress(value: int) -> int:
    """A coroutine job writing through aiorq's current job (the worker's async client)."""
    job = aiorq.get_current_job()
    assert job is not None
    job.meta['progress'] = value
    await job.save_meta()
    return value


def touch_outside(key: str) -> None:
    """Writes a key the job's Redis user may not touch."""
    job = rq.get_current_job()
    assert job is not None
    job.connection.set(key, 'x')


async def async_touch_outside(key: str) -> None:
    job = aiorq.get_current_job()
    assert job is not None
    await job.connection.set(key, 'x')


def fail(message: str) -> None:
    raise ValueError(message)


def describe(data: dict[str, int]) -> dict[str, object]:
    """JSON in, JSON out: a dict argument and a dict result."""
    return {'keys': sorted(data), 'total': sum(data.values())}
