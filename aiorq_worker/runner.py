"""Running one execution: the executor calls the job's function, the runner decides its outcome
(callbacks, exception handlers, webhooks), the outcome writer records it, and the events tell
the listeners (logs, counts, metrics, spans)."""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

import rq.job
from rq.job import JobStatus, Retry
from rq.job_lifecycle import format_exc_info
from rq.utils import now

from aiorq.handlers import call_exception_handlers, handle_abandoned

from .events import Ending, Events
from .execution import Execution
from .executor import Attempt, ExcInfo, Executor, timed_out
from .flags import Flags
from .inflight import InFlight
from .processes import ChildJobError
from .settings import Settings
from .tracebacks import user_frames
from .writer import OutcomeRefusedError, OutcomeWriter, ResultTooLargeError

logger = logging.getLogger('aiorq.worker')

# What a job (or its callback) may raise and have recorded as its failure; CancelledError is
# the worker's own (stop, shutdown, time limit) and never one of them.
USER_ERRORS = (Exception, SystemExit, KeyboardInterrupt, GeneratorExit)


def _cancelled_by_itself() -> bool:
    """Whether the CancelledError being handled was raised by the job, not by a cancel of its task
    (Python 3.10 cannot tell: there it counts as the worker's own)."""
    task = asyncio.current_task()
    return sys.version_info >= (3, 11) and task is not None and not task.cancelling()


class Runner:
    """Runs the executions of one worker, from its settings, executor, outcome writer, events,
    the executions in flight (to give each one's slot back) and the stop flags."""

    def __init__(
        self,
        settings: Settings,
        executor: Executor,
        writer: OutcomeWriter,
        events: Events,
        inflight: InFlight,
        flags: Flags,
    ) -> None:
        self.settings = settings
        self.executor = executor
        self.writer = writer
        self.events = events
        self.inflight = inflight
        self.flags = flags

    async def run(self, ex: Execution) -> None:
        """The execution's task: its function, then its outcome; its slot is given back at the end."""
        self.events.job_started(ex)
        attempt = Attempt(ex)
        try:
            await self._attempt(attempt)
        finally:
            self.executor.finished(attempt)
            if attempt.thread_alive():
                assert attempt.thread is not None
                self.inflight.track_thread(attempt.thread)  # the thread holds a slot until it returns
            self.inflight.done(ex)
            self.events.job_left(ex)

    async def _attempt(self, attempt: Attempt) -> None:
        ex = attempt.ex
        exc_info: ExcInfo | None = None
        return_value: Any = None
        try:
            return_value, exc_info = await self.executor.perform(attempt)
        except asyncio.TimeoutError:
            exc_info = await self._timeout(attempt, sys.exc_info())
        except asyncio.CancelledError:
            exc_info = sys.exc_info()
            if ex.stopped:
                await self.finish_stopped(ex)
                return
            if self.flags.cold_shutdown:
                await self.finish_cold(attempt)
                return
            if not _cancelled_by_itself():
                raise  # the worker's own cancellation
        except BaseException:
            # Everything a job raises is its own failure: SystemExit, KeyboardInterrupt and
            # the watchdog's JobTimeoutException included (rq's perform_job catches all).
            exc_info = sys.exc_info()
        await self._outcome(ex, return_value, exc_info)

    async def _timeout(self, attempt: Attempt, exc_info: ExcInfo) -> ExcInfo:
        limit = attempt.past_limit()
        if limit is None:
            return exc_info  # the job raised TimeoutError itself: an ordinary failure
        if attempt.thread is not None and attempt.thread_alive() and attempt.ex.should_retry:
            # Its retry must not start while this thread still runs it.
            logger.warning(
                'Job %s: over its time limit (%ss) in a thread that cannot be stopped; '
                'its failure and retry are recorded when the thread returns',
                attempt.ex.job_id,
                limit,
            )
            await asyncio.wait([attempt.thread])
        return timed_out(limit)

    async def _outcome(self, ex: Execution, return_value: Any, exc_info: ExcInfo | None) -> None:
        ex.ended_at = ex.last_heartbeat = now()
        if exc_info is None and isinstance(return_value, Retry):
            if await self.writer.returned_retry(ex, return_value):
                self.events.job_ended(ex, Ending.RETURNED_RETRY)
        elif exc_info is None:
            exc_info = await self.success(ex, return_value)
        if exc_info is not None:
            await self.failure(ex, exc_info)

    async def success(self, ex: Execution, return_value: Any) -> ExcInfo | None:
        """Success callback, then the success transaction; a raising callback makes it a failure."""
        if ex.fallback:  # a callback gets rq's job (the lean path has none to run)
            job = ex.job
            job._status = JobStatus.FINISHED
            try:
                await self.executor.callback(ex, job.success_callback, job.success_callback_timeout, return_value)
            except USER_ERRORS:
                return sys.exc_info()
        try:
            committed = await self.writer.success(ex, return_value)
        except (ResultTooLargeError, OutcomeRefusedError):
            # This job's result cannot be stored: the job fails, with the reason as its error.
            if ex.rq_job_built:
                ex.job._status = JobStatus.FAILED
            return sys.exc_info()
        if committed:
            if ex.fallback:  # only rq's path has webhooks (no coroutine to await otherwise)
                await self.webhooks(ex, JobStatus.FINISHED)
            self.events.job_ended(ex, Ending.OK)
        return None

    async def failure(self, ex: Execution, exc_info: ExcInfo) -> None:
        if ex.fallback:
            job = ex.job
            job._status = JobStatus.FAILED
            try:
                await self.executor.callback(ex, job.failure_callback, job.failure_callback_timeout, *exc_info)
            except USER_ERRORS:
                exc_info = sys.exc_info()
        exc_info = user_frames(exc_info)  # from the job's own first frame, without the runner's
        self.events.job_raised(ex, exc_info)
        if self.settings.exception_handlers:  # they get rq's job, built for them
            await call_exception_handlers(self.settings.exception_handlers, ex.job, exc_info)
        self.log_exception(ex.record.origin or ex.queue, ex.job_id, exc_info)
        if isinstance(exc_info[1], ChildJobError):
            exc_string = str(exc_info[1])  # the traceback as the child process formatted it
        else:
            exc_string = format_exc_info(exc_info)
        retrying = ex.should_retry
        record = not self.settings.disable_default_exception_handler
        committed = await self.writer.failure(ex, exc_string, record=record)
        if committed and not retrying:
            await self.webhooks(ex, JobStatus.FAILED, exc_string=exc_string)
        self.events.job_ended(ex, Ending.RETRYING if retrying else Ending.FAILED)

    async def finish_stopped(self, ex: Execution) -> None:
        """§4.14: stopped callback (errors swallowed), then status ``stopped``, no retry, no webhooks."""
        ex.ended_at = None
        if ex.fallback:
            ex.last_heartbeat = ex.last_beat  # rq's job holds its last beat (None: the claim's stays)
            job = ex.job
            try:
                await self.executor.callback(ex, job.stopped_callback, job.stopped_callback_timeout)
            except USER_ERRORS:
                logger.exception('Job %s: stopped callback raised', job.id)
        await self.writer.stopped(ex)
        self.events.job_ended(ex, Ending.STOPPED)

    async def finish_cold(self, attempt: Attempt) -> None:
        """A cold shutdown ended the job: recorded as rq records an abnormal horse exit (failure
        callback not run, retries apply), unless its thread still runs it."""
        ex = attempt.ex
        if attempt.thread_alive():
            # Recorded now, its retry could start while this thread still runs it; once the
            # process is gone, maintenance fails it as abandoned.
            logger.warning(
                'Job %s: still running in a thread at cold shutdown; left to be recovered as abandoned', ex.job_id
            )
        else:
            ex.ended_at = now()
            if ex.fallback:
                ex.last_heartbeat = ex.last_beat  # rq's job holds its last beat (None: the claim's stays)
            await self.writer.abandoned(ex)
        self.events.job_ended(ex, Ending.CANCELLED)

    async def webhooks(self, ex: Execution, status: JobStatus, exc_string: str | None = None) -> None:
        """rq's webhooks for the job's new status (a job with webhooks takes rq's path)."""
        if not ex.fallback:
            return
        job = ex.job
        if any(w.job_status == status for w in job.webhooks):
            await asyncio.to_thread(job.send_webhooks, status, exc_string=exc_string)

    async def handle_exception(self, job: rq.job.Job, exc_info: Any) -> None:
        """rq's exception-handler chain (``aiorq.handlers``), then the worker's own log line
        unless ``disable_default_exception_handler``."""
        await call_exception_handlers(self.settings.exception_handlers, job, exc_info)
        self.log_exception(job.origin, job.id, exc_info)

    def log_exception(self, origin: str, job_id: str, exc_info: Any) -> None:
        """The worker's own log line, unless ``disable_default_exception_handler``."""
        if not self.settings.disable_default_exception_handler:
            logger.error('%s: job %s raised', origin, job_id, exc_info=exc_info)

    async def abandoned(self, job: rq.job.Job) -> None:
        """Maintenance found ``job`` abandoned: rq's policy (``aiorq.handlers.handle_abandoned``)."""
        self.events.job_abandoned(job)
        await handle_abandoned(job, self.executor.callback, lambda exc_info: self.handle_exception(job, exc_info))
