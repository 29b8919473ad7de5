"""``aiorq.get_current_job()``: the running job as an ``aiorq.Job``.

An aiorq worker sets it per task. Under a stock rq worker (which runs a coroutine job with
``asyncio.run``) it is built from rq's own current job and an async client to the same
server, which also becomes the current connection, so one coroutine job works on either kind
of worker.
"""

from __future__ import annotations

import asyncio
import copy
import warnings
from collections.abc import AsyncIterator, Callable
from contextvars import ContextVar
from typing import Any

import rq.job
from redis.asyncio import Redis

from . import protocol as p
from .connections import async_connection, current_connection_or_none, push_connection
from .job import Job


class Deferred:
    """A current job built the first time it is asked for (the worker's jobs mostly never ask):
    ``build`` is called at most once per instance and its value kept. The worker also sets
    these in rq's own current-job variable (``aiorq_worker.executor``)."""

    __slots__ = ('build', 'value')

    def __init__(self, build: Callable[[], Any]) -> None:
        self.build: Callable[[], Any] | None = build
        self.value: Any = None

    def __call__(self) -> Any:
        build = self.build
        if build is not None:
            self.value = build()
            self.build = None
        return self.value


_current_job: ContextVar[Job | Deferred | None] = ContextVar('aiorq_current_job', default=None)


def set_current_job(job: Job | Deferred | None) -> None:
    """Used by the worker inside each job's own task (a :class:`Deferred` job is built when read)."""
    _current_job.set(job)


def get_current_job(connection: Redis | None = None, job_class: type[Job] | None = None) -> Job | None:
    """The job running in this task, or ``None``. ``connection`` and ``job_class`` are
    deprecated and ignored, as in rq 3.0."""
    if connection:
        warnings.warn('connection argument for get_current_job is deprecated.', DeprecationWarning, 2)
    if job_class:
        warnings.warn('job_class argument for get_current_job is deprecated.', DeprecationWarning, 2)
    job = _current_job.get()
    if isinstance(job, Deferred):
        return job()
    if job is not None:
        return job
    stock = rq.job.get_current_job()
    if stock is None:
        return None
    conn = current_connection_or_none()
    closer = None
    if conn is None:
        conn = async_connection(stock.connection)
        push_connection(conn)
        closer = _close_with_loop(conn)
    codec = copy.copy(stock)
    codec.connection = p.codec.NOIO
    job = Job._wrap(codec, conn)
    job._closer = closer  # type: ignore[attr-defined]  # kept alive as long as the job
    _current_job.set(job)
    return job


async def _closing(conn: Redis) -> AsyncIterator[None]:
    try:
        yield
    finally:
        await conn.aclose()


def _close_with_loop(conn: Redis) -> AsyncIterator[None] | None:
    """Close a client aiorq made for a stock worker's coroutine job when its event loop ends.

    Stock rq runs the coroutine with ``asyncio.run``, which finalizes pending async generators
    before closing the loop; a started generator whose ``finally`` closes the client rides on
    that, without any hook in rq.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return None
    gen = _closing(conn)
    asyncio.ensure_future(gen.__anext__())
    return gen
