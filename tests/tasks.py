"""Importable job functions for the tests (workers import them by name)."""

from __future__ import annotations

import asyncio


def add(a: int, b: int) -> int:
    return a + b


def summator(*args: int) -> int:
    return sum(args)


def fail(message: str = 'boom') -> None:
    raise ValueError(message)


def echo(*args: object, **kwargs: object) -> tuple[tuple[object, ...], dict[str, object]]:
    return args, kwargs


async def async_add(a: int, b: int) -> int:
    await asyncio.sleep(0)
    return a + b


def on_success_cb(job: object, connection: object, result: object) -> None:
    pass


def on_failure_cb(job: object, connection: object, *exc_info: object) -> None:
    pass


def on_stopped_cb(job: object, connection: object) -> None:
    pass


async def async_callback(job: object, connection: object, result: object) -> None:
    pass


class Adder:
    def __init__(self, base: int) -> None:
        self.base = base

    def add(self, x: int) -> int:
        return self.base + x


async def introspect(n: int) -> dict[str, object]:
    """A coroutine job using aiorq inside: its own job, meta progress, a nested fetch."""
    import aiorq

    job = aiorq.get_current_job()
    assert job is not None
    job.meta['progress'] = n
    await job.save_meta()
    again = await aiorq.Job.fetch(job.id)
    return {'id': job.id, 'origin': job.origin, 'meta': again.meta, 'status': (await again.get_status()).value}


def stock_progress(n: int) -> int:
    """Plain stock rq code: meta progress through rq.get_current_job()."""
    import rq

    job = rq.get_current_job()
    assert job is not None
    job.meta['progress'] = n
    job.save_meta()
    return n * 2
