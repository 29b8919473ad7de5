"""``aiorq_worker.Worker``: one rq worker identity whose in-flight jobs are its executions.

This module wires the parts (see docs/internals.md); none of them imports it. Admission pops a
job only when a slot is free (no prefetch), blocking in ``BLMOVE``/``BLPOP`` when the queues are
empty; each admitted job runs as its own task (see :mod:`.runner`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import FrameType
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq.defaults import DEFAULT_JOB_MONITORING_INTERVAL, DEFAULT_MAINTENANCE_TASK_INTERVAL, DEFAULT_RESULT_TTL
from rq.utils import now, utcformat
from rq.version import VERSION as RQ_VERSION
from rq.worker import WorkerStatus

import aiorq
from aiorq import tracing
from aiorq.connections import endpoint, sync_connection
from aiorq.protocol import keys, workers

from .admission import Admission
from .commands import CommandListener
from .cron import CronRunner
from .events import Events, JobCounts, LogListener, ThroughputListener, TracingListener
from .execution import Execution
from .executor import Executor
from .flags import Flags
from .heartbeat import Heartbeat
from .inflight import InFlight
from .maintenance import Maintenance
from .metrics import WorkerMetrics
from .processes import ProcessPool
from .runner import Runner
from .scheduler import Scheduler
from .settings import DEFAULT_CONCURRENCY, Settings
from .state import WorkerState
from .status import StateKeeper
from .throughput import ThroughputRecorder
from .watchdog import LoopWatchdog, RunningFrames
from .writer import OutcomeWriter

__all__ = ['DEFAULT_CONCURRENCY', 'SuspendedError', 'Worker', 'install_signal_handlers']

logger = logging.getLogger('aiorq.worker')

Hook = Callable[['Worker'], Awaitable[None]]
CLOCKS_STOP_WAIT = 10.0  # seconds the clocks get to end at shutdown
HEARTBEAT_JOIN_WAIT = 5.0  # seconds the heartbeat thread gets to end at shutdown


class SuspendedError(Exception):
    """Raised by :meth:`Worker.work` when workers are suspended (``rq suspend``)."""


def _setting(name: str, doc: str) -> Any:
    """A read-only attribute of the worker that is one of its settings."""
    return property(lambda self: getattr(self.settings, name), doc=doc)


def _flag(name: str, doc: str) -> Any:
    """An attribute of the worker that is one of its stop flags."""
    return property(lambda self: getattr(self.flags, name), lambda self, v: setattr(self.flags, name, v), doc=doc)


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
        queues = [queues] if isinstance(queues, (str, aiorq.Queue)) else list(queues)
        if connection is None:
            first = next((q for q in queues if isinstance(q, aiorq.Queue)), None)
            connection = first.connection if first is not None else aiorq.get_current_connection()
        self.settings = Settings.build(
            [q.name if isinstance(q, aiorq.Queue) else q for q in queues],
            name=name,
            concurrency=concurrency,
            default_result_ttl=default_result_ttl,
            worker_ttl=worker_ttl,
            job_monitoring_interval=job_monitoring_interval,
            maintenance_interval=maintenance_interval,
            serializer=serializer,
            exception_handlers=exception_handlers,
            disable_default_exception_handler=disable_default_exception_handler,
            log_job_description=log_job_description,
            dequeue_strategy=dequeue_strategy,
            sync_jobs=sync_jobs,
            job_class=job_class,
        )
        self.connection = connection
        self.on_startup = _hooks(on_startup)
        self.on_shutdown = _hooks(on_shutdown)
        self.state = WorkerState()
        self.hostname = socket.gethostname()
        self.pid = os.getpid()
        self.ip_address = 'unknown'
        self.birth: str | None = None
        # Prometheus /metrics while working (MetricsError at once if prometheus_client is missing).
        self.metrics_port = metrics_port
        self.metrics_address = metrics_address
        self.metrics = self._metrics() if metrics_port is not None else None  # before any thread or client
        self._wire()
        self._listen()

    def _wire(self) -> None:
        """The parts, each handed what it needs."""
        settings, conn = self.settings, self.connection
        self.flags = Flags()
        self.inflight = InFlight(on_idle=lambda: self.status.poke())
        self.status = StateKeeper(conn, settings.name, self.flags.idle_state, lambda: bool(len(self.inflight)))
        self.pool = ThreadPoolExecutor(settings.concurrency, thread_name_prefix=f'aiorq-{settings.name[:8]}')
        self.sync_connection = sync_connection(conn)
        self.frames = RunningFrames()  # the executions' frames, for the loop watchdog
        self.events = Events()
        self.counts = JobCounts()
        self.executor = Executor(conn, self.sync_connection, self.pool, settings.job_class, self.frames, self)
        self.writer = OutcomeWriter(conn, settings.name, settings.default_result_ttl, settings.serializer)
        self.runner = Runner(settings, self.executor, self.writer, self.events, self.inflight, self.flags)
        self.commands = CommandListener(conn, settings.name, self.inflight, self.request_stop)
        self.admission = Admission(
            settings, conn, self.inflight, self.flags, self.status, self._start, self.writer.unstartable,
            self.events.reconnected,
        )  # fmt: skip
        # The clocks: each its own task with a narrow interface; none waits on admission.
        self.maintenance = Maintenance(
            conn,
            settings.queue_names,
            settings.maintenance_interval,
            serializer=settings.serializer,
            on_abandoned=self.runner.abandoned,
            on_stuck=self.writer.stuck,
            label=settings.name,
        )
        self.scheduler: Scheduler | None = None
        self.cron: CronRunner | None = None
        self.clocks: list[asyncio.Task[None]] = []
        self.cron_stop = asyncio.Event()
        self.cron_task: asyncio.Task[None] | None = None
        # The dashboard's throughput history (rq:aiorq:throughput:*): counted on the loop,
        # written once a second by its own clock, flushed once more when the clocks stop.
        self.throughput = ThroughputRecorder(self.connection)
        self.throughput_stop = asyncio.Event()
        self.throughput_task: asyncio.Task[None] | None = None
        self.heartbeat: Heartbeat | None = None
        self.watchdog: LoopWatchdog | None = None

    def _metrics(self) -> WorkerMetrics:
        def last_beat() -> float | None:
            return self.heartbeat.last_beat if self.heartbeat is not None else None

        s = self.settings
        return WorkerMetrics(s.name, self.connection, s.queue_names, lambda: len(self.inflight), last_beat)

    def _listen(self) -> None:
        """The listeners of the job events: spans first (a job's span is current while the others
        hear of it), then the log lines, the counts and the metrics."""
        if tracing.ENABLED:
            self.events.add(TracingListener())
        self.events.add(LogListener(self.name, self.settings.log_job_description))
        self.events.add(self.counts)
        if self.metrics is not None:
            self.events.add(self.metrics)
        self.events.add(ThroughputListener(self.throughput))

    def _start(self, ex: Execution) -> None:
        """Admission's hand-off: the execution runs as its own task, owned by ``inflight``."""
        self.inflight.add(ex, asyncio.ensure_future(self.runner.run(ex)))

    def __repr__(self) -> str:
        return f'<aiorq Worker {self.name} {self.queue_names}>'

    # -- what the worker's users read ----------------------------------------------------------

    name = _setting('name', 'The worker name (rq:worker:<name>).')
    concurrency = _setting('concurrency', 'Jobs in flight at once.')
    default_result_ttl = _setting('default_result_ttl', 'Result TTL of jobs that set none.')
    worker_ttl = _setting('worker_ttl', "The worker record's TTL while idle (less rq's 60 s slack).")
    job_monitoring_interval = _setting('job_monitoring_interval', 'Seconds between heartbeats.')
    maintenance_interval = _setting('maintenance_interval', 'Seconds between maintenance passes.')
    serializer = _setting('serializer', "The jobs' serializer.")
    disable_default_exception_handler = _setting('disable_default_exception_handler', 'rq -d.')
    log_job_description = _setting('log_job_description', 'Job descriptions in the log lines.')
    dequeue_strategy = _setting('dequeue_strategy', 'default, round_robin or random.')
    sync_jobs = _setting('sync_jobs', 'How plain functions run: thread or process.')
    job_class = _setting('job_class', 'What aiorq.get_current_job() returns in jobs.')
    single = _setting('single', 'Serving one queue.')
    stop_requested = _flag('stop_requested', 'A warm shutdown is under way.')
    cold_shutdown = _flag('cold_shutdown', 'A cold shutdown is under way.')
    suspended = _flag('suspended', '``rq suspend`` is in force.')

    @property
    def queue_names(self) -> list[str]:
        return list(self.settings.queue_names)

    @property
    def exception_handlers(self) -> list[Callable[..., Any]]:
        return list(self.settings.exception_handlers)

    @property
    def executions(self) -> dict[str, Execution]:
        """The executions in flight by id (a copy)."""
        return {ex.id: ex for ex in self.inflight.executions()}

    @property
    def busy_threads(self) -> int:
        """Plain jobs' threads still running after their execution ended."""
        return self.inflight.threads

    @property
    def successful_job_count(self) -> int:
        return self.counts.successful

    @property
    def failed_job_count(self) -> int:
        return self.counts.failed

    @property
    def process_pool(self) -> ProcessPool | None:
        return self.executor.process_pool

    @property
    def key(self) -> str:
        return keys.worker(self.name)

    def in_flight(self) -> int:
        """Slots taken (a plain job whose thread outlived its execution still holds one)."""
        return self.inflight.count()

    def idle_state(self) -> str:
        """The state to show while no execution runs (``busy`` is decided from the executions index)."""
        return self.flags.idle_state()

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

    async def handle_exception(self, job: Any, exc_info: Any) -> None:
        """rq's exception-handler chain for ``job``, then the worker's log line (see :mod:`aiorq.handlers`)."""
        await self.runner.handle_exception(job, exc_info)

    # -- stopping -------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Warm shutdown: stop admitting, let in-flight jobs finish. A second call cancels them."""
        if self.stop_requested:
            self.request_force_stop()
            return
        logger.info('Worker %s: warm shut down requested', self.name)
        self.stop_requested = True
        self.admission.wake()
        self.inflight.wake()
        if len(self.inflight):
            asyncio.ensure_future(self._note_shutdown_requested())
        asyncio.ensure_future(self.admission.unblock())

    def request_force_stop(self) -> None:
        """Cold shutdown: cancel every execution in flight."""
        self.cold_shutdown = True
        count = len(self.inflight.tasks())
        logger.warning('Worker %s: cold shut down: cancelling %d jobs', self.name, count)
        self.inflight.cancel_all()

    async def _note_shutdown_requested(self) -> None:
        try:
            await workers.set_field(self.connection, self.name, 'shutdown_requested_date', utcformat(now()))
        except Exception:
            logger.debug('could not record shutdown_requested_date', exc_info=True)

    def stop_job(self, job_id: str) -> bool:
        """Stop every execution of ``job_id`` here (``rq``'s stop-job command)."""
        return self.inflight.stop_job(job_id)

    def stop_execution(self, execution_id: str) -> bool:
        """Stop one execution (``rq``'s stop-execution command)."""
        return self.inflight.stop_execution(execution_id)

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
            self.cron = cron if isinstance(cron, CronRunner) else CronRunner(self.connection, str(cron))
            self.cron.load()  # a bad config fails the start (CronConfigError), not a background task
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

    async def start_clocks(self, burst: bool) -> None:
        """Maintenance (first pass now, as rq's at start-up), the state clock, the scheduler and
        cron, each as its own task. In burst mode the scheduler makes its one pass first."""
        self.clocks.append(asyncio.ensure_future(self.status.run()))
        self.throughput_stop.clear()
        self.throughput_task = asyncio.ensure_future(self.throughput.run(self.throughput_stop))
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
        self.throughput_stop.set()
        self.status.stop()
        self.maintenance.stop()
        if self.scheduler is not None:
            self.scheduler.stop()
        for task in self.clocks:
            task.cancel()
        # Cron and the throughput history stop on their events (each writes once more first).
        waiting = self.clocks + [t for t in (self.cron_task, self.throughput_task) if t is not None]
        if waiting:
            await asyncio.wait(waiting, timeout=CLOCKS_STOP_WAIT)
        self.clocks, self.cron_task, self.throughput_task = [], None, None
        if self.scheduler is not None:
            try:
                await self.scheduler.release()
            except Exception:
                logger.exception('Worker %s: could not release the scheduler locks', self.name)

    async def bootstrap(self) -> None:
        """Birth (rq's record), commands, the watchdog and heartbeat threads, start-up hooks."""
        blocking = await self.admission.open()
        self.ip_address = await workers.client_address(blocking, self.name)
        self.birth = utcformat(now())
        await workers.register_birth(
            self.connection, self.name, self.queue_names, self.base_fields(), self.settings.idle_ttl
        )
        logger.info('Worker %s: started with PID %d, aiorq %s', self.name, self.pid, aiorq.VERSION)
        if (policy := await workers.eviction_policy(self.connection)) not in (None, 'noeviction'):
            # Any other policy lets Redis drop job hashes and queue lists when memory runs short.
            logger.warning('Redis maxmemory-policy is %s: jobs can be evicted; set maxmemory-policy noeviction', policy)
        await self.commands.start()
        await workers.set_state(self.connection, self.name, WorkerStatus.STARTED.value)
        logger.info('*** Listening on %s...', ', '.join(self.queue_names))
        self.watchdog = LoopWatchdog(asyncio.get_running_loop(), self.frames, self.name, self.events.loop_blocked)
        self.watchdog.begin()
        self.heartbeat = Heartbeat(
            self.settings,
            sync_connection(self.connection),
            self.inflight.snapshot,
            self.flags.idle_state,
            self.base_fields,
            self.watchdog,
            self.inflight.beaten,
        )
        self.heartbeat.start()
        for hook in self.on_startup:
            await hook(self)
        if self.sync_jobs == 'process':
            # Children build their clients from this (TLS, ACL user and Sentinel included).
            pool = ProcessPool(self.concurrency, endpoint(self.connection).portable(), self.on_startup)
            await pool.start()
            self.executor.process_pool = pool

    async def teardown(self) -> None:
        """Clocks, shutdown hooks, threads, commands, child processes, then death."""
        await self.stop_clocks()
        for hook in self.on_shutdown:
            try:
                await hook(self)
            except Exception:
                logger.exception('Shutdown hook %r raised', hook)
        if self.heartbeat is not None:
            self.heartbeat.stop()
            await asyncio.to_thread(self.heartbeat.join, HEARTBEAT_JOIN_WAIT)
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
        """Wait until every execution in flight has ended."""
        await self.inflight.drain()


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
