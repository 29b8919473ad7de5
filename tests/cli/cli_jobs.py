"""Job functions and classes for the CLI tests (workers import them by name)."""

from __future__ import annotations

import asyncio

import redis
import rq.job

import aiorq
from aiorq_worker import Worker
from aiorq_worker.state import get_current_worker


def fail(message: str = 'boom') -> None:
    raise ValueError(message)


async def async_fail(message: str = 'boom') -> None:
    await asyncio.sleep(0)
    raise ValueError(message)


class MyJob(aiorq.Job):
    def shout(self) -> str:
        return f'{self.id}!'


class MyQueue(aiorq.Queue):
    pass


class StockJob(rq.job.Job):
    pass


class SyncRedis(redis.Redis):
    pass


class MyWorker(Worker):
    pass


async def classes_seen() -> list[str]:
    """The classes a coroutine job sees: its aiorq job, and the worker running it."""
    job = aiorq.get_current_job()
    assert job is not None
    return [type(job).__name__, type(get_current_worker()).__name__, job.shout()]


def classes_seen_in_thread() -> list[str]:
    """The same from a plain function (thread mode)."""
    job = aiorq.get_current_job()
    assert job is not None
    return [type(job).__name__, type(get_current_worker()).__name__, job.shout()]
