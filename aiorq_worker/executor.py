"""Calling a job's function and its callbacks: a coroutine in the execution's own task, a plain
function in the thread pool or in a child process (``--sync-jobs process``), each under the
job's time limit, with the job made current (``rq.get_current_job()``, ``aiorq.get_current_job()``)."""

from __future__ import annotations

import asyncio
import contextvars
import copy
import inspect
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import rq.job
from redis.asyncio import Redis
from rq.timeouts import JobTimeoutException

import aiorq
from aiorq import connections as aiorq_connections
from aiorq.current import Deferred, set_current_job
from aiorq.protocol.defaults import job_timeout

from .execution import Execution
from .processes import ProcessPool
from .state import _current_worker
from .watchdog import Running, RunningFrames, timeout_message

ExcInfo = tuple[type[BaseException] | None, BaseException | None, TracebackType | None]
Current = Execution | rq.job.Job  # what a call makes current: an execution, or rq's job (maintenance)


class _RQCurrentJob:
    """rq's current-job variable (``rq.job._current_job``, which ``rq.get_current_job()`` reads),
    reading through a :class:`Deferred`: the worker sets one per execution, and rq's job is
    built only when a job asks for it. rq's own ``Job.perform`` sets and reads real jobs."""

    def __init__(self, var: contextvars.ContextVar[Any]) -> None:
        self.var = var

    def get(self, *default: Any) -> Any:
        value = self.var.get(*default)
        return value() if isinstance(value, Deferred) else value

    def set(self, value: Any) -> contextvars.Token[Any]:
        return self.var.set(value)

    def reset(self, token: contextvars.Token[Any]) -> None:
        self.var.reset(token)


if not isinstance(rq.job._current_job, _RQCurrentJob):
    rq.job._current_job = _RQCurrentJob(rq.job._current_job)  # type: ignore[assignment]


def timeout_of(timeout: Any) -> float | None:
    """A job's time limit in seconds from its ``timeout`` field (None: it has none)."""
    limit = job_timeout(timeout)
    return None if limit == -1 else float(limit)


def timed_out(limit: float) -> ExcInfo:
    """rq's exception for a job over its time limit, with the traceback a raise gives it."""
    try:
        raise JobTimeoutException(timeout_message(limit)) from None
    except JobTimeoutException:
        return sys.exc_info()


class _Deadline:
    """``asyncio.timeout`` for Python 3.10: the awaited coroutine stays in the caller's task.
    (``wait_for`` runs it in a task of its own, and a ``SystemExit`` raised there would escape
    to the loop and end the worker instead of failing the job.)"""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.expired = False

    async def __aenter__(self) -> None:
        task = asyncio.current_task()
        assert task is not None

        def expire() -> None:
            self.expired = True
            task.cancel()

        self.handle = asyncio.get_running_loop().call_later(self.delay, expire)

    async def __aexit__(self, exc_type: type[BaseException] | None, *_: Any) -> None:
        self.handle.cancel()
        if self.expired and exc_type is asyncio.CancelledError:
            raise asyncio.TimeoutError from None


def deadline(delay: float) -> Any:
    """An async context manager that raises ``asyncio.TimeoutError`` after ``delay`` seconds."""
    if sys.version_info >= (3, 11):
        return asyncio.timeout(delay)
    return _Deadline(delay)


@dataclass(eq=False)
class Attempt:
    """One call of an execution's function: what the runner needs once it returned or raised."""

    ex: Execution
    running: Running | None = None  # set once the function is about to be called
    thread: asyncio.Future[Any] | None = None  # the pool thread running a plain function

    def thread_alive(self) -> bool:
        return self.thread is not None and not self.thread.done()

    def past_limit(self) -> float | None:
        """The job's time limit when this attempt has run at least that long, else None."""
        limit = timeout_of(self.ex.timeout)
        if self.running is None or limit is None or time.monotonic() - self.running.started < limit:
            return None
        return limit


class Executor:
    """Runs functions for one worker: ``connection``/``sync_connection`` are what jobs and
    callbacks get as their client, ``pool`` the threads for plain functions, ``job_class`` what
    ``aiorq.get_current_job()`` returns, ``frames`` what the loop watchdog reads, ``worker`` what
    ``get_current_worker()`` returns. ``process_pool`` is set once started (``--sync-jobs process``)."""

    def __init__(
        self,
        connection: Redis,
        sync_connection: Any,
        pool: ThreadPoolExecutor,
        job_class: type[aiorq.Job],
        frames: RunningFrames,
        worker: Any,
    ) -> None:
        self.connection = connection
        self.sync_connection = sync_connection
        self.pool = pool
        self.job_class = job_class
        self.frames = frames
        self.worker = worker
        self.process_pool: ProcessPool | None = None

    # -- the job made current ------------------------------------------------------------------

    def sync_job(self, job: rq.job.Job) -> rq.job.Job:
        """A copy of the codec job on the worker's blocking client, for stock rq code."""
        clone = copy.copy(job)
        clone.connection = self.sync_connection
        return clone

    def async_job(self, job: rq.job.Job) -> aiorq.Job:
        return self.job_class._wrap(job, self.connection)

    def currents(self, target: Current) -> tuple[Deferred, Deferred]:
        """What ``rq.get_current_job()`` and ``aiorq.get_current_job()`` return for ``target``,
        each built when first read; an execution's are made once and kept on it."""
        if not isinstance(target, Execution):
            return Deferred(lambda: self.sync_job(target)), Deferred(lambda: self.async_job(target))
        pair: tuple[Deferred, Deferred] | None = target.current.get('pair')
        if pair is None:
            pair = target.current['pair'] = (
                Deferred(lambda: self.sync_job(target.job)),
                Deferred(lambda: self.async_job(target.job)),
            )
        return pair

    def make_current(self, target: Current) -> None:
        """Make the job current for ``rq.get_current_job()`` and ``aiorq.get_current_job()`` (rq's
        job is built only if one of them is called), and the worker's client the current
        connection, in the running context."""
        rq_current, aiorq_current = self.currents(target)
        rq.job._current_job.set(rq_current)  # type: ignore[arg-type]  # read through _RQCurrentJob
        set_current_job(aiorq_current)
        aiorq_connections.push_connection(self.connection)
        _current_worker.set(self.worker)

    def in_context(self, ctx: contextvars.Context, target: Current, fn: Callable[[], Any]) -> Any:
        """Call ``fn`` in ``ctx`` (a copy of the caller's context) with the job made current."""

        def run() -> Any:
            self.make_current(target)
            return fn()

        return ctx.run(run)

    # -- where a call runs ---------------------------------------------------------------------

    async def in_thread(
        self, target: Current, fn: Callable[[], Any], timeout: float | None, attempt: Attempt | None = None
    ) -> Any:
        """Run a blocking call in the pool; a timeout abandons the thread (it cannot be killed).
        The thread's future goes into ``attempt``, so the caller knows whether it still runs."""
        loop = asyncio.get_running_loop()
        # run_in_executor alone does not carry the context into the thread: copy it here.
        future = loop.run_in_executor(self.pool, self.in_context, contextvars.copy_context(), target, fn)
        if attempt is not None:
            attempt.thread = future
        return await asyncio.wait_for(asyncio.shield(future), timeout)

    async def in_task(self, target: Current, make: Callable[[], Any], timeout: float | None) -> Any:
        """Await a coroutine in this execution's own task: a task copies the context when it is
        created, so what is made current here is invisible to the other executions."""
        self.make_current(target)
        coro = make()
        if timeout is None:
            return await coro
        async with deadline(timeout):
            return await coro

    async def perform(self, attempt: Attempt) -> tuple[Any, ExcInfo | None]:
        """Call the job's function; returns its value, and the timeout it gets for holding the
        loop past its limit before it returned (None otherwise). Raises what the job raises."""
        ex = attempt.ex
        call = ex.call()
        func = call.func
        timeout = timeout_of(ex.timeout)
        args, kwargs = call.args, call.kwargs
        # The watchdog finds this frame on the loop's stack when the job holds the loop.
        attempt.running = running = Running(ex, sys._getframe(), time.monotonic(), timeout)
        self.frames.add(running)
        if inspect.iscoroutinefunction(func):
            value = await self.in_task(ex, lambda: func(*args, **kwargs), timeout)
            if timeout is not None and time.monotonic() - running.started > timeout:
                return value, timed_out(timeout)  # it returned, but only after holding the loop too long
            return value, None
        if self.process_pool is not None:
            return await self.process_pool.run(ex.job_id, dict(ex.record.raw), ex.serializer, timeout), None
        value = await self.in_thread(ex, lambda: func(*args, **kwargs), timeout, attempt)
        if inspect.iscoroutine(value):
            # A plain function that returned a coroutine: await it here, as rq does.
            coro = value
            value = await self.in_task(ex, lambda: coro, timeout)
        return value, None

    def finished(self, attempt: Attempt) -> None:
        """The attempt is over: the watchdog stops looking for its frame."""
        if attempt.running is not None:
            self.frames.remove(attempt.running)

    async def callback(self, target: Current, cb: Any, timeout: int, *args: Any) -> None:
        """rq's callback arguments (``target``: an execution, or rq's job); coroutine callbacks
        get an ``aiorq.Job`` and the async client."""
        if cb is None:
            return
        job = target.job if isinstance(target, Execution) else target
        if inspect.iscoroutinefunction(cb):
            async with deadline(timeout):
                await cb(self.async_job(job), self.connection, *args)
        else:
            sync = self.sync_job(job)
            await self.in_thread(target, lambda: cb(sync, self.sync_connection, *args), timeout)
