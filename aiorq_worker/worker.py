"""``aiorq_worker.Worker``: one rq worker identity whose in-flight jobs are its executions.

Admission pops a job only when a slot is free (no prefetch), blocking in ``BLMOVE``/``BLPOP``
when the queues are empty; each admitted job runs as its own task (see :mod:`.runner`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from types import FrameType
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq.defaults import (
    DEFAULT_JOB_MONITORING_INTERVAL,
    DEFAULT_MAINTENANCE_TASK_INTERVAL,
    DEFAULT_RESULT_TTL,
    DEFAULT_WORKER_TTL,
)
from rq.exceptions import AbandonedJobError
from rq.job import Job as RQJob
from rq.serializers import resolve_serializer
from rq.utils import now, utcformat
from rq.version import VERSION as RQ_VERSION
from rq.worker import WorkerStatus

import aiorq
from aiorq import tracing
from aiorq.connections import endpoint, sync_connection
from aiorq.protocol import dequeue, finish, outcomes, workers
from aiorq.protocol.batch import Combiner

from .admission import Admission
from .commands import CommandListener
from .heartbeat import Heartbeat
from .maintenance import Maintenance
from .metrics import WorkerMetrics
from .processes import ProcessPool
from .runner import Runner
from .scheduler import Scheduler
from .state import WorkerState
from .status import StateKeeper
from .watchdog import LoopWatchdog, RunningFrames

logger = logging.getLogger('aiorq.worker')

DEFAULT_CONCURRENCY = 16
Hook = Callable[['Worker'], Awaitable[None]]
# The runner's outcome lines (see log_end) as metric and span outcomes.
OUTCOMES = {
    'Job OK': 'finished',
    'Job returned Retry': 'retried',
    'Job failed, retrying': 'retried',
    'Job failed': 'failed',
    'Job stopped': 'stopped',
    'Job cancelled by cold shutdown': 'cancelled',
}


class SuspendedError(Exception):
    """Raised by :meth:`Worker.work` when workers are suspended (``rq suspend``)."""


class Worker:
    """An asyncio worker serving rq queues beside stock ``rq worker`` processes.

    ``concurrency`` jobs run at once: coroutine functions as tasks on the loop, plain functions in
    a thread pool of the same size. ``on_startup``/``on_shutdown`` coroutines receive the worker
    and own resources shared by all jobs through ``worker.state`` (``get_worker_state()`` in a job).
    ``metrics_port`` serves Prometheus metrics on ``/metrics`` while working (see docs/observability.md).
    """

    def __init__(
        self,
        queues: str | aiorq.Queue | Sequence[str | aiorq.Queue],
        connection: Redis | None = None,
        *,
        name: str | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
        default_result_ttl: int = DEFAULT_RESULT_TTL,
        worker_ttl: int | None = None,
        job_monitoring_interval: int = DEFAULT_JOB_MONITORING_INTERVAL,
        maintenance_interval: int = DEFAULT_MAINTENANCE_TASK_INTERVAL,
        serializer: Any = None,
        exception_handlers: Sequence[Callable[..., Any]] | Callable[..., Any] | None = None,
        disable_default_exception_handler: bool = False,
        log_job_description: bool = True,
        dequeue_strategy: str = 'default',
        sync_jobs: str = 'thread',
        on_startup: Sequence[Hook] | Hook | None = None,
        on_shutdown: Sequence[Hook] | Hook | None = None,
        job_class: type[aiorq.Job] | None = None,
        metrics_port: int | None = None,
        metrics_address: str = '127.0.0.1',
    ) -> None:
        if isinstance(queues, (str, aiorq.Queue)):
            queues = [queues]
        names = [q.name if isinstance(q, aiorq.Queue) else q for q in queues]
        if not names:
            names = ['default']
        if connection is None:
            first = next((q for q in queues if isinstance(q, aiorq.Queue)), None)
            connection = first.connection if first is not None else aiorq.get_current_connection()
        if concurrency < 1:
            raise ValueError('concurrency must be at least 1')
        if dequeue_strategy not in ('default', 'random', 'round_robin'):
            raise ValueError(
                f'Dequeue strategy {dequeue_strategy} is not allowed. Use `default`, `random` or `round_robin`.'
            )
        self.connection = connection
        self.queue_names = names
        self.single = len(names) == 1
        self.name = name or uuid.uuid4().hex
        self.concurrency = concurrency
        self.default_result_ttl = default_result_ttl
        self.worker_ttl = worker_ttl or DEFAULT_WORKER_TTL
        self.job_monitoring_interval = job_monitoring_interval
        self.maintenance_interval = maintenance_interval
        self.serializer = resolve_serializer(serializer)
        if exception_handlers is None:
            exception_handlers = []
        elif callable(exception_handlers):
            exception_handlers = [exception_handlers]
        self.exception_handlers = list(exception_handlers)
        self.disable_default_exception_handler = disable_default_exception_handler
        self.log_job_description = log_job_description
        self.dequeue_strategy = dequeue_strategy
        if sync_jobs not in ('thread', 'process'):
            raise ValueError("sync_jobs must be 'thread' or 'process'")
        self.sync_jobs = sync_jobs
        self.process_pool: ProcessPool | None = None
        self.on_startup = _hooks(on_startup)
        self.on_shutdown = _hooks(on_shutdown)
        # What aiorq.get_current_job() and coroutine callbacks get (``aiorq worker -j``).
        self.job_class: type[aiorq.Job] = job_class or aiorq.Job
        # Prometheus /metrics while working (MetricsError at once if prometheus_client is missing).
        self.metrics_port = metrics_port
        self.metrics_address = metrics_address
        self.metrics = WorkerMetrics(self) if metrics_port is not None else None
        self.state = WorkerState()
        self.executions: dict[str, dequeue.Execution] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        # Stop commands that name no known execution while a claim is in flight: the claim may
        # have started it in Redis (where the sender saw it) before its reply reached us.
        self.claims_in_flight = 0
        self.early_stops: set[str] = set()  # execution ids and job ids
        self.busy_threads = 0
        self.last_job_ended = 0.0  # time.monotonic(): --max-idle-time counts from here
        self.successful_job_count = 0
        self.failed_job_count = 0
        self.hostname = socket.gethostname()
        self.pid = os.getpid()
        self.ip_address = 'unknown'
        self.birth: str | None = None
        self.suspended = False
        self.stop_requested = False
        self.cold_shutdown = False
        # Set whenever a job ends or a thread frees up: admission waits on it for a free slot.
        self.slot_freed = asyncio.Event()
        self.pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=f'aiorq-{self.name[:8]}')
        self.sync_connection = sync_connection(connection)
        # The executions' runner frames, for the loop watchdog (started with the worker).
        self.frames = RunningFrames()
        self.watchdog: LoopWatchdog | None = None
        self.runner = Runner(self, self.frames)
        # The largest encoded result Redis accepts (its proto-max-bulk-len, asked when needed).
        self.result_limit = outcomes.ResultLimit()
        # Success transactions finishing at the same moment share one script call.
        self.combiner = Combiner(connection)
        self.commands = CommandListener(self)
        self.admission = Admission(self)
        # The clocks: each its own task with a narrow interface; none waits on admission.
        self.maintenance = Maintenance(
            connection,
            names,
            maintenance_interval,
            serializer=self.serializer,
            on_abandoned=self._abandoned,
            on_stuck=self._stuck,
            label=self.name,
        )
        self.status = StateKeeper(connection, self.name, self.idle_state, lambda: bool(self.executions))
        self.scheduler: Scheduler | None = None
        self.cron: Any = None
        self.clocks: list[asyncio.Task[None]] = []
        self.heartbeat: Heartbeat | None = None
        self.cron_stop = asyncio.Event()
        self.cron_task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f'<aiorq Worker {self.name} {self.queue_names}>'

    # -- bookkeeping shared with the heartbeat thread and the runner ----------------------

    @property
    def key(self) -> str:
        return aiorq.protocol.keys.worker(self.name)

    def base_fields(self) -> dict[str, Any]:
        stamp = utcformat(now())
        return {
            'birth': self.birth or stamp,
            'last_heartbeat': stamp,
            'queues': ','.join(self.queue_names),
            'pid': self.pid,
            'hostname': self.hostname,
            'ip_address': self.ip_address,
            'version': RQ_VERSION,
            'python_version': sys.version,
            # Not an rq field (rq's readers ignore unknown ones): for `aiorq info` and dashboards.
            'concurrency': self.concurrency,
        }

    def idle_state(self) -> str:
        """The state to show while no execution runs (``busy`` is decided from the executions index)."""
        return WorkerStatus.SUSPENDED.value if self.suspended else WorkerStatus.IDLE.value

    def in_flight(self) -> int:
        # A plain job whose thread outlived its execution (its time limit, a stop) still holds a slot.
        return len(self.executions) + self.busy_threads

    def track_thread(self, future: asyncio.Future[Any]) -> None:
        """A thread still running after its execution ended: it holds a slot until it returns."""
        self.busy_threads += 1

        def done(_: Future[Any] | asyncio.Future[Any]) -> None:
            self.busy_threads -= 1
            self.slot_freed.set()

        future.add_done_callback(done)

    def execution_done(self, ex: dequeue.Execution) -> None:
        self.last_job_ended = time.monotonic()
        self.executions.pop(ex.id, None)
        self.tasks.pop(ex.id, None)
        self.slot_freed.set()
        if not self.executions:
            self.status.poke()

    def execute(self, ex: dequeue.Execution) -> Coroutine[Any, Any, None]:
        """The coroutine admission runs as the execution's task (in a span when tracing is on)."""
        if tracing.ENABLED:
            return self._traced(ex)
        return self.runner.run(ex)

    async def _traced(self, ex: dequeue.Execution) -> None:
        with tracing.execution_span(ex.job, ex.queue):
            await self.runner.run(ex)

    def reconnected(self) -> None:
        """Admission reached Redis again after losing it."""
        logger.info('Worker %s: Redis reachable again', self.name)
        if self.metrics is not None:
            self.metrics.reconnected()

    def log_start(self, ex: dequeue.Execution) -> None:
        if self.metrics is not None:
            self.metrics.job_started(ex)
        if self.log_job_description:
            logger.info('%s: %s (%s)', ex.queue, ex.job.description, ex.job.id)
        else:
            logger.info('%s: %s', ex.queue, ex.job.id)

    def log_end(self, ex: dequeue.Execution, outcome: str, error: bool = False) -> None:
        if error:
            self.failed_job_count += 1
        else:
            self.successful_job_count += 1
        if self.metrics is not None or tracing.ENABLED:
            kind = OUTCOMES.get(outcome, 'failed' if error else 'finished')
            if self.metrics is not None:
                self.metrics.job_ended(ex, kind)
            tracing.set_outcome(kind)  # called in the execution's task: its span is current
        (logger.warning if error else logger.info)('%s: %s (%s)', ex.queue, outcome, ex.job.id)

    def handle_exception(self, job: RQJob, exc_info: Any) -> None:
        """Custom exception handlers, in order, until one returns a falsy value (rq's rule)."""
        if tracing.ENABLED:
            tracing.record_exception(exc_info)
        for handler in self.exception_handlers:
            try:
                keep_going = handler(job, *exc_info)
            except Exception:
                logger.exception('Exception handler %r raised', handler)
                continue
            if keep_going is not None and not keep_going:
                break
        if not self.disable_default_exception_handler:
            logger.error('%s: job %s raised', job.origin, job.id, exc_info=exc_info)

    # -- stopping -------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Warm shutdown: stop admitting, let in-flight jobs finish. A second call cancels them."""
        if self.stop_requested:
            self.request_force_stop()
            return
        logger.info('Worker %s: warm shut down requested', self.name)
        self.stop_requested = True
        self.admission.wake()
        self.slot_freed.set()
        if self.executions:
            asyncio.ensure_future(self._note_shutdown_requested())
        asyncio.ensure_future(self.admission.unblock())

    def request_force_stop(self) -> None:
        logger.warning('Worker %s: cold shut down: cancelling %d jobs', self.name, len(self.tasks))
        self.cold_shutdown = True
        for task in list(self.tasks.values()):
            task.cancel()

    async def _note_shutdown_requested(self) -> None:
        try:
            await workers.set_field(self.connection, self.name, 'shutdown_requested_date', utcformat(now()))
        except Exception:
            logger.debug('could not record shutdown_requested_date', exc_info=True)

    def stop_job(self, job_id: str) -> bool:
        found = False
        for ex in list(self.executions.values()):
            if ex.job.id == job_id:
                found |= self.stop_execution(ex.id)
        if not found and self.claims_in_flight:
            self.early_stops.add(job_id)
        return found

    def stop_execution(self, execution_id: str) -> bool:
        ex = self.executions.get(execution_id)
        task = self.tasks.get(execution_id)
        if ex is None or task is None:
            if self.claims_in_flight:
                self.early_stops.add(execution_id)
            return False
        ex.stopped = True
        task.cancel()
        return True

    # -- the work loop ----------------------------------------------------------------------

    async def work(
        self,
        burst: bool = False,
        max_jobs: int | None = None,
        max_idle_time: int | None = None,
        with_scheduler: bool = False,
        cron: Any = None,
    ) -> bool:
        """Serve the queues until stopped (or, in burst mode, until they are empty and nothing runs).

        ``max_jobs`` counts admitted jobs: the worker stops admitting at that number and exits once
        they finished. ``max_idle_time`` is measured while no job is in flight.
        ``with_scheduler`` moves due scheduled jobs (rq's scheduler protocol, see :mod:`.scheduler`);
        in burst mode it makes one pass first, as rq's does. ``cron`` is a cron config (a path or
        module, rq's format) run beside the jobs, or a ready ``CronRunner``.
        """
        if await aiorq.is_suspended(self.connection):
            raise SuspendedError('RQ is currently suspended, to resume job execution run "rq resume"')
        if with_scheduler:
            self.scheduler = Scheduler(self.connection, self.queue_names, serializer=self.serializer)
        if cron is not None:
            self.cron = self._cron_runner(cron)
        if self.metrics is not None and self.metrics_port is not None:
            self.metrics.serve(self.metrics_port, self.metrics_address)  # before birth: a taken port fails cleanly
        try:
            await self.bootstrap()
        except BaseException:
            if self.metrics is not None:
                self.metrics.close()
            raise
        admitted = 0
        try:
            await self.start_clocks(burst)
            admitted = await self.admission.run(burst, max_jobs, max_idle_time)
            await self.drain()
        finally:
            await self.teardown()
        return admitted > 0

    def _cron_runner(self, cron: Any) -> Any:
        from .cron import CronRunner

        runner = cron if isinstance(cron, CronRunner) else CronRunner(self.connection, str(cron))
        runner.load()  # a bad config fails the start (CronConfigError), not a background task
        return runner

    async def start_clocks(self, burst: bool) -> None:
        """Maintenance (first pass now, as rq's at start-up), the state clock, the scheduler and
        cron, each as its own task. In burst mode the scheduler makes its one pass first."""
        self.clocks.append(asyncio.ensure_future(self.status.run()))
        try:
            await self.maintenance.run_once()
        except (RedisConnectionError, RedisTimeoutError) as e:
            logger.error('Worker %s: start-up maintenance cannot reach Redis (%s)', self.name, e)
        self.clocks.append(asyncio.ensure_future(self.maintenance.run()))
        if self.scheduler is not None:
            if burst:
                await self.scheduler.run_once()
            else:
                self.clocks.append(asyncio.ensure_future(self.scheduler.run()))
        if self.cron is not None:
            # Cron stops on its event (it records its death itself); the other clocks are cancelled.
            self.cron_task = asyncio.ensure_future(self.cron.run(self.cron_stop))

    async def stop_clocks(self) -> None:
        self.cron_stop.set()
        self.status.stop()
        self.maintenance.stop()
        if self.scheduler is not None:
            self.scheduler.stop()
        for task in self.clocks:
            task.cancel()
        waiting = self.clocks + ([self.cron_task] if self.cron_task is not None else [])
        if waiting:
            await asyncio.wait(waiting, timeout=10)
        self.clocks, self.cron_task = [], None
        if self.scheduler is not None:
            try:
                await self.scheduler.release()
            except Exception:
                logger.exception('Worker %s: could not release the scheduler locks', self.name)

    async def _abandoned(self, job: RQJob) -> None:
        """An abandoned job found by maintenance: its failure callback, then the handlers."""
        cb = job.failure_callback
        args = (AbandonedJobError, AbandonedJobError(), None)
        if self.metrics is not None:
            self.metrics.job_abandoned(job)
        if cb is not None:
            await self.runner.callback(job, cb, job.failure_callback_timeout, *args)
        self.handle_exception(job, args)

    async def _stuck(self, queue_name: str, job_id: str) -> None:
        """An id stuck in the intermediate list: failed as rq's maintenance fails it."""
        try:
            job = await aiorq.protocol.jobs.fetch(self.connection, job_id, self.serializer)
        except Exception:
            return
        await finish.finish_failure(self.connection, self.name, job, None, 'Job was stuck in intermediate queue.')

    def loop_blocked(self, seconds: float, ex: dequeue.Execution | None) -> None:
        """The watchdog saw the loop held for ``seconds`` (by ``ex``, when it could tell)."""
        if self.metrics is not None:
            self.metrics.loop_blocked(seconds, ex)

    async def bootstrap(self) -> None:
        blocking = await self.admission.open()
        self.ip_address = await workers.client_address(blocking, self.name)
        self.birth = utcformat(now())
        await workers.register_birth(
            self.connection, self.name, self.queue_names, self.base_fields(), self.worker_ttl + 60
        )
        logger.info('Worker %s: started with PID %d, aiorq %s', self.name, self.pid, aiorq.VERSION)
        if (policy := await workers.eviction_policy(self.connection)) not in (None, 'noeviction'):
            # Any other policy lets Redis drop job hashes and queue lists when memory runs short.
            logger.warning('Redis maxmemory-policy is %s: jobs can be evicted; set maxmemory-policy noeviction', policy)
        await self.commands.start()
        await workers.set_state(self.connection, self.name, WorkerStatus.STARTED.value)
        logger.info('*** Listening on %s...', ', '.join(self.queue_names))
        self.watchdog = LoopWatchdog(asyncio.get_running_loop(), self.frames, self.name, self.loop_blocked)
        self.watchdog.begin()
        self.heartbeat = Heartbeat(self, sync_connection(self.connection), self.watchdog)
        self.heartbeat.start()
        for hook in self.on_startup:
            await hook(self)
        if self.sync_jobs == 'process':
            # Children build their clients from this (TLS, ACL user and Sentinel included).
            self.process_pool = ProcessPool(self.concurrency, endpoint(self.connection).portable(), self.on_startup)
            await self.process_pool.start()

    async def teardown(self) -> None:
        await self.stop_clocks()
        for hook in self.on_shutdown:
            try:
                await hook(self)
            except Exception:
                logger.exception('Shutdown hook %r raised', hook)
        if self.heartbeat is not None:
            self.heartbeat.stop()
            await asyncio.to_thread(self.heartbeat.join, 5)
        if self.watchdog is not None:
            self.watchdog.end()
        await self.commands.stop()
        if self.process_pool is not None:
            await self.process_pool.close()
        try:
            await workers.register_death(self.connection, self.name, self.queue_names)
        except Exception:
            logger.exception('Worker %s: could not register death', self.name)
        await self.admission.close()
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.sync_connection.close()
        if self.metrics is not None:
            self.metrics.close()
        logger.info('Worker %s: stopped', self.name)

    async def drain(self) -> None:
        while self.tasks:
            await asyncio.wait(list(self.tasks.values()))


def _hooks(value: Sequence[Hook] | Hook | None) -> list[Hook]:
    if value is None:
        return []
    if callable(value):
        return [value]
    return list(value)


def install_signal_handlers(worker: Worker) -> None:
    """First SIGINT/SIGTERM: warm shutdown; the next one, however soon: cold shutdown (rq's rule).

    The loop runs these only when it turns. So that a job holding the loop cannot make the
    worker deaf, the Python-level handler (which CPython runs in the main thread between two
    bytecodes, wherever the loop is held) also acts on a second signal at once: it cancels the
    job holding the loop, in its own frame, as the cold shutdown would once the loop turns.
    """
    loop = asyncio.get_running_loop()
    received = 0
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, worker.request_stop)
        previous = signal.getsignal(sig)

        def on_signal(signum: int, frame: FrameType | None, previous: Any = previous) -> None:
            nonlocal received
            if callable(previous):
                previous(signum, frame)  # how the loop learns of it (asyncio's no-op, uvloop's record)
            received += 1
            if received >= 2 and worker.watchdog is not None and worker.watchdog.holding(frame):
                logger.warning('Worker %s: cold shut down while a job holds the event loop: cancelling it', worker.name)
                worker.cold_shutdown = True
                raise asyncio.CancelledError

        signal.signal(sig, on_signal)
