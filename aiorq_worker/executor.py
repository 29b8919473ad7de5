"""Calling a job's function and its callbacks: a coroutine in the execution's own task, a plain
function in the thread pool or in a child process (``--sync-jobs process``), each under the
job's time limit, with the job made current (``rq.get_current_job()``, ``aiorq.get_current_job()``)."""

from __future__ import annotations

import asyncio
import contextvars
import copy
import inspect
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future as ThreadFuture
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


if sys.version_info >= (3, 11):  # a task's count of cancel requests, which asyncio.timeout keeps

    def _cancelling(task: asyncio.Task[Any]) -> int:
        return task.cancelling()

    def _uncancel(task: asyncio.Task[Any]) -> int:
        return task.uncancel()

else:

    def _cancelling(task: asyncio.Task[Any]) -> int:
        return 0

    def _uncancel(task: asyncio.Task[Any]) -> int:
        return 0


class _Limit:
    """A task's time limit as one timer handle: at the limit the task is cancelled, and
    :meth:`close` tells whether the ``CancelledError`` it ends with is the limit's (then the
    caller raises ``asyncio.TimeoutError``). The semantics of ``asyncio.timeout`` (3.11: a cancel
    requested by someone else as well stays a cancel; the limit's own cancel is uncounted), at
    a third of its cost: no context manager, no state machine."""

    __slots__ = ('task', 'cancelling', 'expired', 'handle')

    def __init__(self, task: asyncio.Task[Any], delay: float) -> None:
        self.task = task
        self.cancelling = _cancelling(task)
        self.expired = False
        loop = task.get_loop()
        self.handle = loop.call_at(loop.time() + delay, self._expire)

    def _expire(self) -> None:
        self.expired = True
        self.task.cancel()

    def close(self, exc_type: type[BaseException] | None) -> bool:
        """The call is over (``exc_type``: what it raised): True when it ended by the limit."""
        self.handle.cancel()
        if not self.expired:
            return False
        if _uncancel(self.task) > self.cancelling:
            return False  # cancelled by someone else too: that cancel wins
        return exc_type is asyncio.CancelledError


class _Deadline:
    """``asyncio.timeout`` (one :class:`_Limit`): the awaited coroutine stays in the caller's
    task. (``wait_for`` runs it in a task of its own, and a ``SystemExit`` raised there would
    escape to the loop and end the worker instead of failing the job.)"""

    def __init__(self, delay: float) -> None:
        self.delay = delay

    async def __aenter__(self) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.limit = _Limit(task, self.delay)

    async def __aexit__(self, exc_type: type[BaseException] | None, *_: Any) -> None:
        if self.limit.close(exc_type):
            raise asyncio.TimeoutError from None


def deadline(delay: float) -> Any:
    """An async context manager that raises ``asyncio.TimeoutError`` after ``delay`` seconds."""
    return _Deadline(delay)


def _expire(waiter: asyncio.Future[Any]) -> None:
    """A thread's time limit: its caller stops waiting (the thread runs on)."""
    if not waiter.done():
        waiter.set_exception(asyncio.TimeoutError())


class _Raised:
    """A call's exception, handed back as a value: ``Future.set_exception`` refuses some
    (``StopIteration``), and the caller re-raises it with its traceback either way."""

    __slots__ = ('error',)

    def __init__(self, error: BaseException) -> None:
        self.error = error


_NEVER_RAN = object()  # a work item the pool cancelled (shut down) before it ran


class Handoff:
    """Hands the outcomes of calls run in pool threads back to the loop, in batches: a thread
    appends its outcome and wakes the loop (one ``call_soon_threadsafe``) only when it is the
    first since the loop last took them, so a burst of completions costs one wake-up.

    Each call has two futures: ``ran``, resolved (to None) once its thread returned, whatever
    happened to the caller (the runner counts a thread that outlived its execution by it), and
    ``waiter``, what the caller awaits: the call's value or :class:`_Raised`, unless the caller
    gave up first (its time limit, a cancel)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.lock = threading.Lock()
        self.outcomes: list[tuple[asyncio.Future[Any] | None, asyncio.Future[Any], Any]] = []

    def complete(self, ran: asyncio.Future[Any] | None, waiter: asyncio.Future[Any], outcome: Any) -> None:
        """From a pool thread (or a cancelled work item's callback): the call's outcome."""
        with self.lock:
            self.outcomes.append((ran, waiter, outcome))
            first = len(self.outcomes) == 1
        if first:
            try:
                self.loop.call_soon_threadsafe(self.deliver)
            except RuntimeError:
                pass  # the loop is closed: nobody waits any more

    def deliver(self) -> None:
        with self.lock:
            outcomes, self.outcomes = self.outcomes, []
        for ran, waiter, outcome in outcomes:
            if ran is not None and not ran.done():
                ran.set_result(None)
            if waiter.done():
                continue  # the caller gave up (time limit, cancel): the outcome is dropped
            if outcome is _NEVER_RAN:
                waiter.cancel()
            else:
                waiter.set_result(outcome)


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
        self._handoff: Handoff | None = None

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
        return ctx.run(self._current_call, target, fn)

    def _current_call(self, target: Current, fn: Callable[[], Any]) -> Any:
        self.make_current(target)
        return fn()

    # -- where a call runs ---------------------------------------------------------------------

    def handoff(self) -> Handoff:
        """The running loop's :class:`Handoff` (made on first use)."""
        loop = asyncio.get_running_loop()
        handoff = self._handoff
        if handoff is None or handoff.loop is not loop:
            handoff = self._handoff = Handoff(loop)
        return handoff

    async def in_thread(
        self, target: Current, fn: Callable[[], Any], timeout: float | None, attempt: Attempt | None = None
    ) -> Any:
        """Run a blocking call in the pool; a timeout abandons the thread (it cannot be killed).
        A future resolved when the thread returns goes into ``attempt``, so the caller knows
        whether it still runs."""
        handoff = self.handoff()
        loop = handoff.loop
        waiter: asyncio.Future[Any] = loop.create_future()
        ran: asyncio.Future[Any] | None = None if attempt is None else loop.create_future()
        ctx = contextvars.copy_context()  # the pool does not carry the context into the thread

        def call() -> None:
            try:
                outcome = ctx.run(self._current_call, target, fn)
            except BaseException as e:  # the job's own failure, SystemExit included
                outcome = _Raised(e)
            handoff.complete(ran, waiter, outcome)

        def cancelled(work: ThreadFuture[None]) -> None:
            if work.cancelled():  # never ran (the pool shut down): the caller gets a cancel
                handoff.complete(ran, waiter, _NEVER_RAN)

        self.pool.submit(call).add_done_callback(cancelled)
        if attempt is not None:
            attempt.thread = ran  # only once submitted: a pool that refused it runs nothing
        if timeout is None:
            outcome = await waiter
        else:
            handle = loop.call_at(loop.time() + timeout, _expire, waiter)
            try:
                outcome = await waiter
            finally:
                handle.cancel()
        if type(outcome) is _Raised:
            error = outcome.error
            del outcome  # no cycle through this frame
            try:
                raise error
            finally:
                del error
        return outcome

    async def in_task(self, target: Current, make: Callable[[], Any], timeout: float | None) -> Any:
        """Await a coroutine in this execution's own task: a task copies the context when it is
        created, so what is made current here is invisible to the other executions."""
        self.make_current(target)
        coro = make()
        if timeout is None:
            return await coro
        task = asyncio.current_task()
        assert task is not None
        limit = _Limit(task, timeout)
        try:
            value = await coro
        except BaseException as e:
            if limit.close(type(e)):
                raise asyncio.TimeoutError from None
            raise
        limit.close(None)
        return value

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
