"""Running one execution: the job's function (a coroutine on the loop, a plain function in the
pool), its timeout, its callbacks, and the outcome written through the protocol layer."""

from __future__ import annotations

import asyncio
import contextvars
import copy
import inspect
import logging
import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any

import rq.job
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq.job import JobStatus, Retry
from rq.job_lifecycle import format_exc_info
from rq.timeouts import JobTimeoutException
from rq.utils import now

import aiorq
from aiorq import connections as aiorq_connections
from aiorq.current import set_current_job
from aiorq.protocol import codec, dequeue, finish
from aiorq.protocol.batch import SectionError
from aiorq.protocol.outcomes import ResultTooLargeError

from .processes import ChildJobError
from .state import _current_worker
from .tracebacks import user_frames
from .watchdog import Running, RunningFrames, timeout_message

if TYPE_CHECKING:
    from .worker import Worker

logger = logging.getLogger('aiorq.worker')

ExcInfo = tuple[type[BaseException] | None, BaseException | None, TracebackType | None]
STOPPED_EXC = 'Job stopped by user, work-horse terminated.'
# Error replies that pass on their own (memory freed, load or failover done): outcomes retry them.
PASSING_ERRORS = ('OOM', 'LOADING', 'BUSY', 'TRYAGAIN', 'MASTERDOWN', 'READONLY', 'NOREPLICAS')
# What a job (or its callback) may raise and have recorded as its failure; CancelledError is
# the worker's own (stop, shutdown, time limit) and never one of them.
USER_ERRORS = (Exception, SystemExit, KeyboardInterrupt, GeneratorExit)


class OutcomeRefusedError(Exception):
    """Redis refused an outcome for a reason that does not pass with time (wrong type, too large)."""


def timeout_of(job: rq.job.Job) -> float | None:
    timeout = job.timeout or aiorq.Queue.DEFAULT_TIMEOUT
    return None if timeout == -1 else float(timeout)


def _timed_out(limit: float) -> ExcInfo:
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


class Runner:
    """Runs executions for one worker."""

    def __init__(self, worker: Worker, frames: RunningFrames) -> None:
        self.worker = worker
        self.frames = frames  # what the loop watchdog reads

    # -- helpers ---------------------------------------------------------------------------

    def sync_job(self, job: rq.job.Job) -> rq.job.Job:
        """A copy of the codec job on the worker's blocking client, for stock rq code."""
        clone = copy.copy(job)
        clone.connection = self.worker.sync_connection
        return clone

    def async_job(self, job: rq.job.Job) -> aiorq.Job:
        return self.worker.job_class._wrap(job, self.worker.connection)

    def make_current(self, job: rq.job.Job) -> None:
        """Make the job current for ``rq.get_current_job()`` and ``aiorq.get_current_job()``, and
        the worker's client the current connection, in the running context."""
        rq.job._current_job.set(self.sync_job(job))
        set_current_job(self.async_job(job))
        aiorq_connections.push_connection(self.worker.connection)
        _current_worker.set(self.worker)

    def in_context(self, ctx: contextvars.Context, job: rq.job.Job, fn: Callable[[], Any]) -> Any:
        """Call ``fn`` in ``ctx`` (a copy of the caller's context) with the job made current."""

        def run() -> Any:
            self.make_current(job)
            return fn()

        return ctx.run(run)

    async def in_thread(
        self, job: rq.job.Job, fn: Callable[[], Any], timeout: float | None, thread: list[asyncio.Future[Any]]
    ) -> Any:
        """Run a blocking call in the pool; a timeout abandons the thread (it cannot be killed).
        The thread's future goes into ``thread``, so the caller knows whether it still runs."""
        loop = asyncio.get_running_loop()
        # run_in_executor alone does not carry the context into the thread: copy it here.
        future = loop.run_in_executor(self.worker.pool, self.in_context, contextvars.copy_context(), job, fn)
        thread.append(future)
        return await asyncio.wait_for(asyncio.shield(future), timeout)

    async def in_task(self, job: rq.job.Job, make: Callable[[], Any], timeout: float | None) -> Any:
        """Await a coroutine in this execution's own task: a task copies the context when it is
        created, so what is made current here is invisible to the other executions."""
        self.make_current(job)
        coro = make()
        if timeout is None:
            return await coro
        async with deadline(timeout):
            return await coro

    # -- one execution ---------------------------------------------------------------------

    async def run(self, ex: dequeue.Execution) -> None:
        worker = self.worker
        job = ex.job
        worker.log_start(ex)
        exc_info: ExcInfo | None = None
        return_value: Any = None
        thread: list[asyncio.Future[Any]] = []  # the pool thread running a plain function
        running: Running | None = None
        try:
            try:
                codec.load_data(job)
                func = job.func
                timeout = timeout_of(job)
                args, kwargs = job.args, job.kwargs
                # The watchdog finds this frame on the loop's stack when the job holds the loop.
                running = Running(ex, sys._getframe(), time.monotonic(), timeout)
                self.frames.add(running)
                if inspect.iscoroutinefunction(func):
                    return_value = await self.in_task(job, lambda: func(*args, **kwargs), timeout)
                    if timeout is not None and time.monotonic() - running.started > timeout:
                        # It returned, but only after holding the loop past its limit.
                        exc_info = _timed_out(timeout)
                elif worker.process_pool is not None:
                    stored = getattr(job, '_aiorq_stored', {})
                    return_value = await worker.process_pool.run(job.id, stored, job.serializer, timeout)
                else:
                    return_value = await self.in_thread(job, lambda: func(*args, **kwargs), timeout, thread)
                    if inspect.iscoroutine(return_value):
                        # A plain function that returned a coroutine: await it here, as rq does.
                        coro = return_value
                        return_value = await self.in_task(job, lambda: coro, timeout)
            except asyncio.TimeoutError:
                limit = timeout_of(job)
                if running is None or limit is None or time.monotonic() - running.started < limit:
                    # The job raised TimeoutError itself: an ordinary failure, not its time limit.
                    exc_info = sys.exc_info()
                else:
                    exc_info = _timed_out(limit)
                    if thread and not thread[0].done() and job.should_retry:
                        # Its retry must not start while this thread still runs it.
                        await self.outlived(ex, thread[0], limit)
            except asyncio.CancelledError:
                if ex.stopped:
                    await self.finish_stopped(ex)
                    return
                if worker.cold_shutdown:
                    if thread and not thread[0].done():
                        # Recorded now, its retry could start while this thread still runs it;
                        # once the process is gone, maintenance fails it as abandoned.
                        logger.warning(
                            'Job %s: still running in a thread at cold shutdown; left to be recovered as abandoned',
                            job.id,
                        )
                        worker.log_end(ex, 'Job cancelled by cold shutdown', error=True)
                        return
                    await self.finish_abandoned(ex)
                    return
                task = asyncio.current_task()
                if sys.version_info < (3, 11) or task is None or task.cancelling():
                    raise  # the worker's own cancellation (3.10 cannot tell them apart)
                # Nobody cancelled this task: the job raised CancelledError itself.
                exc_info = sys.exc_info()
            except BaseException:
                # Everything a job raises is its own failure: SystemExit, KeyboardInterrupt and
                # the watchdog's JobTimeoutException included (rq's perform_job catches all).
                exc_info = sys.exc_info()
            job.ended_at = now()
            job.last_heartbeat = job.ended_at
            if exc_info is None and isinstance(return_value, Retry):
                if await self.recorded(ex, lambda _: self.returned_retry(ex, return_value)):
                    worker.log_end(ex, 'Job returned Retry')
            elif exc_info is None:
                exc_info = await self.success(ex, return_value)
            if exc_info is not None:
                await self.failure(ex, exc_info)
        finally:
            if running is not None:
                self.frames.remove(running)
            if thread and not thread[0].done():
                worker.track_thread(thread[0])  # the thread holds a slot until it returns
            worker.execution_done(ex)

    async def outlived(self, ex: dequeue.Execution, thread: asyncio.Future[Any], limit: float) -> None:
        """Wait for the thread of a plain job past its limit before its outcome (a retry) is written."""
        logger.warning(
            'Job %s: over its time limit (%ss) in a thread that cannot be stopped; '
            'its failure and retry are recorded when the thread returns',
            ex.job.id,
            limit,
        )
        await asyncio.wait([thread])

    async def success(self, ex: dequeue.Execution, return_value: Any) -> ExcInfo | None:
        """Success callback, then the success transaction; a raising callback makes it a failure."""
        worker, job = self.worker, ex.job
        job._status = JobStatus.FINISHED
        try:
            await self.callback(job, job.success_callback, job.success_callback_timeout, return_value)
        except USER_ERRORS:
            return sys.exc_info()
        while True:
            try:
                committed = await self.durably(
                    lambda first: finish.finish_success(
                        worker.connection,
                        worker.name,
                        ex,
                        return_value,
                        worker.default_result_ttl,
                        worker.serializer,
                        run=worker.combiner.submit if first else None,
                        max_result_size=worker.result_limit.size,
                    )
                )
                break
            except ResultTooLargeError:
                if not await worker.result_limit.learn(worker.connection):
                    job._status = JobStatus.FAILED
                    return sys.exc_info()
            except OutcomeRefusedError:
                # This job's result cannot be stored: the job fails, with the reason as its error.
                job._status = JobStatus.FAILED
                return sys.exc_info()
        if committed:
            await self.webhooks(job, JobStatus.FINISHED)
            worker.log_end(ex, 'Job OK')
        return None

    async def failure(self, ex: dequeue.Execution, exc_info: ExcInfo) -> None:
        worker, job = self.worker, ex.job
        job._status = JobStatus.FAILED
        try:
            await self.callback(job, job.failure_callback, job.failure_callback_timeout, *exc_info)
        except USER_ERRORS:
            exc_info = sys.exc_info()
        exc_info = user_frames(exc_info)  # from the job's own first frame, without the runner's
        worker.handle_exception(job, exc_info)
        if isinstance(exc_info[1], ChildJobError):
            exc_string = str(exc_info[1])  # the traceback as the child process formatted it
        else:
            exc_string = format_exc_info(exc_info)
        retrying = job.should_retry
        committed = await self.recorded(
            ex,
            lambda _: finish.finish_failure(
                worker.connection,
                worker.name,
                job,
                ex,
                exc_string,
                record=not worker.disable_default_exception_handler,
            ),
        )
        if committed and not retrying:
            await self.webhooks(job, JobStatus.FAILED, exc_string=exc_string)
        worker.log_end(ex, 'Job failed, retrying' if retrying else 'Job failed', error=True)

    async def finish_stopped(self, ex: dequeue.Execution) -> None:
        """§4.14: stopped callback (errors swallowed), then status ``stopped``, no retry, no webhooks."""
        worker, job = self.worker, ex.job
        job.ended_at = None
        try:
            await self.callback(job, job.stopped_callback, job.stopped_callback_timeout)
        except USER_ERRORS:
            logger.exception('Job %s: stopped callback raised', job.id)
        await self.recorded(
            ex, lambda _: finish.finish_failure(worker.connection, worker.name, job, ex, STOPPED_EXC, stopped=True)
        )
        worker.log_end(ex, 'Job stopped', error=True)

    async def finish_abandoned(self, ex: dequeue.Execution) -> None:
        """A cold shutdown ended the job: recorded as rq records an abnormal horse exit
        (failure callback not run, retries apply)."""
        worker, job = self.worker, ex.job
        job.ended_at = now()
        exc = f'Work-horse terminated unexpectedly; cold shutdown of worker {worker.name}; '
        await self.recorded(ex, lambda _: finish.finish_failure(worker.connection, worker.name, job, ex, exc))
        worker.log_end(ex, 'Job cancelled by cold shutdown', error=True)

    async def callback(self, job: rq.job.Job, cb: Any, timeout: int, *args: Any) -> None:
        """rq's callback arguments; coroutine callbacks get an ``aiorq.Job`` and the async client."""
        if cb is None:
            return
        if inspect.iscoroutinefunction(cb):
            async with deadline(timeout):
                await cb(self.async_job(job), self.worker.connection, *args)
        else:
            sync = self.sync_job(job)
            await self.in_thread(job, lambda: cb(sync, self.worker.sync_connection, *args), timeout, [])

    async def webhooks(self, job: rq.job.Job, status: JobStatus, exc_string: str | None = None) -> None:
        if any(w.job_status == status for w in job.webhooks):
            await asyncio.to_thread(job.send_webhooks, status, exc_string=exc_string)

    async def returned_retry(self, ex: dequeue.Execution, retry: Retry) -> bool:
        committed, _ = await finish.finish_returned_retry(self.worker.connection, self.worker.name, ex, retry)
        return committed

    async def recorded(self, ex: dequeue.Execution, write: Callable[[bool], Any]) -> bool:
        """:meth:`durably`, for outcomes that have no fallback: a refusal is logged (the job's
        records stay, for maintenance to recover once its heartbeats stop)."""
        try:
            return bool(await self.durably(write))
        except OutcomeRefusedError as e:
            logger.error('Worker %s: Redis refused the outcome of job %s (%s)', self.worker.name, ex.job.id, e)
            return False

    async def durably(self, write: Callable[[bool], Any]) -> Any:
        """Keep an outcome until Redis takes it: retry with rq's capped exponential backoff.

        ``write(first)`` builds and sends the outcome; ``first`` is False on a retry, which then
        goes out on its own rather than combined with other jobs' outcomes, so one job's outcome
        can never hold another's back. Retrying is safe: builders write the same values each
        time, and an attempt whose reply was lost is recognised as committed (see
        ``protocol.finish._guard``). Only errors that can pass are retried (a lost connection,
        out of memory, a server loading or read-only during a failover); any other refusal
        raises :class:`OutcomeRefusedError` at once. A command that failed after others of the same
        outcome ran cannot be undone, and is reported, not repeated.
        """
        wait = 1.0
        first = True
        while True:
            try:
                return await write(first)
            except SectionError as e:
                if e.partial:
                    logger.error(
                        'Worker %s: an outcome was only partly recorded (%s at its command %d); not retried',
                        self.worker.name,
                        e,
                        e.command,
                    )
                    return False
                if not str(e).startswith(PASSING_ERRORS):
                    raise OutcomeRefusedError(str(e)) from e
                logger.error('Worker %s: Redis refused an outcome (%s); retrying in %.0fs', self.worker.name, e, wait)
            except (RedisConnectionError, RedisTimeoutError, OutOfMemoryError, OSError) as e:
                logger.error(
                    'Worker %s: could not record an outcome (%s); retrying in %.0fs', self.worker.name, e, wait
                )
            except ResponseError as e:
                if not first:
                    raise OutcomeRefusedError(str(e)) from e
                # Refused as a whole: maybe for another job's section; this one is tried alone.
                logger.error('Worker %s: Redis refused a combined outcome write (%s)', self.worker.name, e)
                first = False
                continue
            first = False
            await asyncio.sleep(wait)
            wait = min(wait * 2, 60)
