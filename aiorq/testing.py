"""Run a queue's jobs inside your own tests and apps: the real aiorq worker, on your event loop.

rq's ``Queue(is_async=False)`` runs a job at enqueue, which cannot work inside a running event
loop. Here the jobs run on the caller's loop by :class:`aiorq_worker.Worker` itself, so results,
statuses, registries and Result streams are exactly what a deployed worker writes (against a real
Redis). No signal handlers are installed: the loop and its signals belong to the caller.

This module imports ``aiorq_worker``; ``import aiorq`` alone does not.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from aiorq_worker import Worker

from .queue import Queue

__all__ = ['Drained', 'run_queued', 'worker_running']

Queues = str | Queue | Sequence[str | Queue]


@dataclass(frozen=True)
class Drained:
    """What one :func:`run_queued` call ran, counted as the worker counts them (``rq info``)."""

    worker_name: str
    succeeded: int  # finished, or returned ``Retry``
    failed: int  # failed (a retry counts too), stopped or cancelled

    @property
    def total(self) -> int:
        return self.succeeded + self.failed


async def run_queued(
    queues: Queues,
    connection: Redis | None = None,
    *,
    with_scheduler: bool = False,
    max_jobs: int | None = None,
    **options: Any,
) -> Drained:
    """Run every job queued on ``queues``, and every job their outcomes enqueue there (released
    dependents, retries without an interval, jobs enqueued by jobs), then return.

    A burst-mode :class:`aiorq_worker.Worker` on the running loop; ``options`` go to its
    constructor (``concurrency``, ``name``, ``serializer``, ...). ``connection`` defaults to the
    first ``Queue``'s. List every queue a dependent may be released onto: the others are not
    served. ``with_scheduler`` first moves due scheduled jobs onto their queues.
    """
    worker = Worker(queues, connection, **options)
    # Its own task, so what the worker sets in context variables stays out of the caller's
    # context; cancelling the caller cancels it (and its teardown runs).
    await asyncio.ensure_future(worker.work(burst=True, max_jobs=max_jobs, with_scheduler=with_scheduler))
    return Drained(worker.name, worker.successful_job_count, worker.failed_job_count)


@asynccontextmanager
async def worker_running(
    queues: Queues,
    connection: Redis | None = None,
    *,
    with_scheduler: bool = False,
    stop_timeout: float | None = None,
    **options: Any,
) -> AsyncIterator[Worker]:
    """``async with worker_running(queue) as worker:`` a worker serves ``queues`` on this loop.

    Entered once the worker is registered and its ``on_startup`` hooks ran. On exit it stops
    admitting and lets running jobs finish (a warm shutdown, as on SIGTERM); after
    ``stop_timeout`` seconds, if given, it cancels them (a cold shutdown). ``options`` go to
    :class:`aiorq_worker.Worker`.
    """
    ready = asyncio.Event()

    async def started(_: Worker) -> None:
        ready.set()

    hooks = _as_list(options.pop('on_startup', None))
    worker = Worker(queues, connection, on_startup=[*hooks, started], **options)
    task = asyncio.ensure_future(worker.work(with_scheduler=with_scheduler))
    waiter = asyncio.ensure_future(ready.wait())
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        task.cancel()
        raise
    finally:
        waiter.cancel()
    if task.done():
        task.result()  # raises what stopped it (SuspendedError, a Redis error, a hook's error)
        raise RuntimeError(f'{worker!r} stopped before it started')
    try:
        yield worker
    finally:
        worker.request_stop()
        await asyncio.wait({task}, timeout=stop_timeout)
        if not task.done():
            worker.request_force_stop()
        await task


def _as_list(hooks: Any) -> list[Callable[[Worker], Awaitable[None]]]:
    if hooks is None:
        return []
    return [hooks] if callable(hooks) else list(hooks)
