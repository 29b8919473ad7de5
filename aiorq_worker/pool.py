"""``aiorq worker-pool``: N ``aiorq worker`` processes kept running by one parent, as ``rq worker-pool``.

Each child is its own ``python -m aiorq_worker worker`` process (started with exec, never forked
from a process that may hold an event loop, threads or Redis connections), with its own worker
name: a real aiorq worker in ``rq:workers``, listed by ``rq info`` and ``aiorq info``. The parent
speaks no Redis. It checks the options once (so a bad one is one usage error, not N), starts the
children, replaces a child that ends (not in burst mode; with a growing delay when children die
soon after their start, so a broken setup does not fork in a loop), and forwards stop signals:
the first is each child's warm shutdown, the second its cold one, as with ``aiorq worker``.
"""

from __future__ import annotations

import contextlib
import logging
import logging.config
import os
import select
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import click
from click.core import ParameterSource

from aiorq.protocol.keys import reserved_queue_name

from . import clitools
from .backoff import Backoff
from .clitools import CommandError, fail

logger = logging.getLogger('aiorq.worker_pool')

STABLE_SECONDS = 10.0  # a child that lived this long did start: its end does not count as a crash loop
WAKE_AT_LEAST_EVERY = 5.0  # seconds; children are polled then even if no SIGCHLD woke the parent
# SIGHUP too: the workers run in sessions of their own, so a closed terminal would otherwise end
# the pool alone and leave them running.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def ended(status: int) -> str:
    """``with status 1``, or ``by SIGKILL`` for a process a signal ended (a negative status)."""
    if status >= 0:
        return f'with status {status}'
    try:
        return f'by {signal.Signals(-status).name}'
    except ValueError:
        return f'by signal {-status}'


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    started: float
    signalled: int = 0  # stop signals forwarded to it


@dataclass
class Slot:
    """One of the N places in the pool: the child in it, or when the next one starts."""

    index: int
    child: Child | None = None
    quick_failures: int = 0  # children in a row that died soon after their start
    backoff: Backoff = field(default_factory=Backoff)
    due: float = 0.0
    status: int | None = None  # how the last child ended
    clean: bool = True  # that end was a normal one (see WorkerPool._clean)
    closed: bool = False  # no more children here (burst mode, or stopping)


@dataclass
class WorkerPool:
    """Supervises ``size`` children; ``command(index, name)`` is the argv of child ``index`` (1-based)."""

    size: int
    command: Callable[[int, str], list[str]]
    name: Callable[[int], str]
    burst: bool = False
    env: dict[str, str] | None = None
    slots: list[Slot] = field(init=False)
    received: int = 0  # stop signals the parent received
    announced: int = 0

    def __post_init__(self) -> None:
        self.slots = [Slot(i) for i in range(1, self.size + 1)]

    def run(self) -> int:
        """Runs until every child has ended for good; 0 when each one's last exit status was 0."""
        with self._signals() as wakeup:
            logger.info('Worker pool started with PID %d (workers: %d)', os.getpid(), self.size)
            for slot in self.slots:
                self._start(slot)
            while True:
                self._forward()
                self._reap()
                if all(s.closed and s.child is None for s in self.slots):
                    break
                self._start_due()
                self._wait(wakeup)
        return self._status()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Only counted here: the main loop forwards, so a child it is starting right now gets it too.
        self.received += 1

    @contextlib.contextmanager
    def _signals(self) -> Iterator[socket.socket]:
        """Stop signals counted, SIGCHLD noted; each one wakes :meth:`_wait` through the socket."""
        reader, writer = socket.socketpair()
        reader.setblocking(False)
        writer.setblocking(False)
        previous = {sig: signal.getsignal(sig) for sig in (*STOP_SIGNALS, signal.SIGCHLD)}
        old_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
        try:
            for sig in STOP_SIGNALS:
                if previous[sig] is not signal.SIG_IGN:  # under nohup, SIGHUP stays ignored
                    signal.signal(sig, self._on_signal)
            signal.signal(signal.SIGCHLD, lambda signum, frame: None)  # a Python handler: it writes the socket
            yield reader
        finally:
            signal.set_wakeup_fd(old_fd)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            reader.close()
            writer.close()

    def _start(self, slot: Slot) -> None:
        name = self.name(slot.index)
        try:
            # Own session: a Ctrl-C at a terminal reaches the pool alone, which forwards it once.
            proc = subprocess.Popen(self.command(slot.index, name), env=self.env, start_new_session=True)
        except OSError as e:  # out of processes or memory: a failed start like any other
            logger.error('Worker pool: cannot start worker %s: %s', name, e)
            slot.status, slot.clean, slot.closed = None, False, self.burst
            slot.due = time.monotonic() + self._restart_delay(slot, quick=True)
            return
        slot.child = Child(name, proc, time.monotonic())
        logger.info('Worker pool: started worker %s (PID %d)', name, proc.pid)

    def _start_due(self) -> None:
        now = time.monotonic()
        for slot in self.slots:
            if slot.child is None and not slot.closed and slot.due <= now:
                self._start(slot)

    def _forward(self) -> None:
        """Each child gets as many SIGTERMs as the pool received stop signals (SIGTERM, not SIGINT:
        a child that has not yet installed its handlers then just ends, without a traceback)."""
        if self.received == 0:
            return
        if self.announced < self.received:
            self.announced = self.received
            kind = 'warm' if self.received == 1 else 'cold'
            logger.info('Worker pool: %s shut down of %d workers', kind, sum(s.child is not None for s in self.slots))
        for slot in self.slots:
            slot.closed = True
            child = slot.child
            while child is not None and child.signalled < self.received:
                child.signalled += 1
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.proc.pid, signal.SIGTERM)

    def _reap(self) -> None:
        now = time.monotonic()
        for slot in self.slots:
            child = slot.child
            if child is None or (status := child.proc.poll()) is None:
                continue
            slot.child, slot.status, slot.clean = None, status, self._clean(child, status)
            lived = now - child.started
            if self.burst or slot.closed:
                slot.closed = True
                log = logger.info if slot.clean else logger.warning
                log('Worker pool: worker %s (PID %d) ended %s', child.name, child.proc.pid, ended(status))
                continue
            delay = self._restart_delay(slot, quick=status != 0 and lived < STABLE_SECONDS)
            slot.due = now + delay
            log = logger.warning if status != 0 else logger.info
            log(
                'Worker pool: worker %s (PID %d) ended %s after %.1f s; replacing it in %.0f s',
                *(child.name, child.proc.pid, ended(status), lived, delay),
            )

    def _restart_delay(self, slot: Slot, quick: bool) -> float:
        """None after a child that ran (or died once early), then the worker's backoff: 1, 2, 4 … 60 s."""
        if not quick:
            slot.quick_failures = 0
            slot.backoff.reset()
            return 0.0
        slot.quick_failures += 1
        return 0.0 if slot.quick_failures == 1 else slot.backoff.next()

    def _clean(self, child: Child, status: int) -> bool:
        """Exit status 0, or the end a forwarded SIGTERM gives a child still starting up."""
        return status == 0 or (child.signalled > 0 and status == -signal.SIGTERM)

    def _wait(self, wakeup: socket.socket) -> None:
        timeout = WAKE_AT_LEAST_EVERY
        pending = [s.due for s in self.slots if s.child is None and not s.closed]
        if pending:
            timeout = max(0.0, min(timeout, min(pending) - time.monotonic()))
        select.select([wakeup], [], [], timeout)
        with contextlib.suppress(BlockingIOError):
            while wakeup.recv(512):
                pass

    def _status(self) -> int:
        failed = [s for s in self.slots if not s.clean]
        if failed:
            logger.warning(
                'Worker pool: %d of %d workers ended in failure (status %s)',
                *(len(failed), self.size, ', '.join(str(s.status) for s in failed)),
            )
            return 1
        logger.info('Worker pool: all workers stopped')
        return 0


# -- the command ------------------------------------------------------------------------------------

# What each child gets from the pool's command line, by option: a value, a flag, a repeated value.
# Defaults are not passed (the child's defaults are the same), and neither are values that came
# from the environment (the child inherits it): a secret in RQ_REDIS_URL stays off command lines.
VALUE_OPTIONS = {
    'config': '--config',
    'results_ttl': '--results-ttl',
    'worker_ttl': '--worker-ttl',
    'job_monitoring_interval': '--job-monitoring-interval',
    'maintenance_interval': '--maintenance-interval',
    'max_jobs': '--max-jobs',
    'serializer': '--serializer',
    'dequeue_strategy': '--dequeue-strategy',
    'logging_level': '--logging_level',
    'log_format': '--log-format',
    'date_format': '--date-format',
    'job_class': '--job-class',
    'worker_class': '--worker-class',
    'queue_class': '--queue-class',
    'connection_class': '--connection-class',
    'cron_config': '--cron',
    'concurrency': '--concurrency',
    'sync_jobs': '--sync-jobs',
    'loop_name': '--loop',
    'metrics_host': '--metrics-host',
}
FLAG_OPTIONS = {
    'burst': '--burst',
    'quiet': '--quiet',
    'verbose': '--verbose',
    'disable_default_exception_handler': '--disable-default-exception-handler',
    'disable_job_desc_logging': '--disable-job-desc-logging',
    'with_scheduler': '--with-scheduler',
}
MULTIPLE_OPTIONS = {'path': '--path', 'exception_handler': '--exception-handler'}
QUEUE_CLASS_NO_EFFECT = 'aiorq worker takes jobs through its protocol layer, not Queue methods'
UNUSED = "Only rq's or aiorq's default class is accepted: aiorq worker-pool uses none"


def child_command(ctx: click.Context, options: dict[str, Any], index: int, name: str) -> list[str]:
    """``python -m aiorq_worker worker …`` for child ``index`` (1-based) named ``name``."""
    argv = [sys.executable, '-m', 'aiorq_worker', 'worker', '--name', name]
    given = {k for k in options if ctx.get_parameter_source(k) is ParameterSource.COMMANDLINE}
    for key, flag in VALUE_OPTIONS.items():
        if key in given:
            argv += [flag, str(options[key])]
    argv += [flag for key, flag in FLAG_OPTIONS.items() if key in given and options[key]]
    for key, flag in MULTIPLE_OPTIONS.items():
        if key in given:
            for value in options[key]:
                argv += [flag, value]
    if options['metrics_port'] is not None:
        argv += ['--metrics-port', str(options['metrics_port'] + index - 1)]
    return [*argv, '--', *options['queues']]


def child_names(prefix: str | None) -> Callable[[int], str]:
    """rq's pool names its workers by a random hex id; with a prefix: ``<prefix>-<index>-<6 hex>``
    (a replaced child cannot take its predecessor's name, which stays live for its worker TTL)."""
    if not prefix:
        return lambda index: uuid.uuid4().hex
    return lambda index: f'{prefix}-{index}-{uuid.uuid4().hex[:6]}'


def check(ctx: click.Context, options: dict[str, Any]) -> dict[str, Any]:
    """What ``aiorq worker`` would refuse, refused once here (usage errors exit 2, :class:`CommandError`
    for the rest); returns the settings module's values."""
    from .cron import load_config

    verbose = options['verbose']
    for path in options['path']:
        sys.path.append(path)  # as rq's CLI does
    clitools.load_class(ctx, 'worker_class', verbose)
    clitools.load_class(ctx, 'job_class', verbose)
    clitools.load_class(ctx, 'queue_class', verbose, no_effect=QUEUE_CLASS_NO_EFFECT)
    for handler in options['exception_handler']:
        clitools.imported(ctx, 'exception_handler', handler, verbose)
    port, size = options['metrics_port'], options['num_workers']
    if port is None and ctx.get_parameter_source('metrics_host') is not ParameterSource.DEFAULT:
        clitools.bad(ctx, 'metrics_host', 'serves nothing without --metrics-port')
    if port is not None and port + size - 1 > 65535:
        clitools.bad(ctx, 'metrics_port', f'{size} workers take ports {port} to {port + size - 1}, past 65535')
    for queue in options['queues']:
        if (reserved := reserved_queue_name(queue)) is not None:
            clitools.bad(ctx, 'queues', f'queue name {queue!r} is reserved: {reserved}')
    cls = clitools.connection_class(ctx, verbose)
    settings = clitools.settings(ctx, verbose)
    clitools.serializer(ctx, options['serializer'] or settings.get('SERIALIZER'), verbose)
    clitools.redis_client(ctx, settings, cls)  # a malformed URL or settings; nothing connects
    for queue in [] if options['queues'] else settings.get('QUEUES', []):
        if (reserved := reserved_queue_name(queue)) is not None:
            raise CommandError(f'QUEUES: queue name {queue!r} is reserved: {reserved}')
    if options['cron_config']:
        try:
            load_config(options['cron_config'])
        except Exception as e:
            raise CommandError(f'--cron: {e}') from e
    return settings


def run_pool(options: dict[str, Any]) -> int:
    """0 when every worker's last exit status was 0; 1 with one line on stderr when the pool cannot
    start or a worker failed; usage errors exit 2 before any worker starts."""
    ctx = click.get_current_context()
    try:
        settings = check(ctx, options)
        clitools.logging_and_pid(options, settings)
    except (CommandError, OSError) as e:
        return fail(ctx, str(e))
    env = dict(os.environ)
    if ctx.get_parameter_source('url') is ParameterSource.COMMANDLINE:
        env['RQ_REDIS_URL'] = options['url']  # to the children by their environment, not their argv
    pool = WorkerPool(
        options['num_workers'],
        lambda index, name: child_command(ctx, options, index, name),
        child_names(options['name_prefix'] or settings.get('NAME')),
        burst=options['burst'],
        env=env,
    )
    return pool.run()


@click.command('worker-pool', short_help='Runs N workers, each its own process, as rq worker-pool.')
@click.option('--num-workers', '-n', type=click.IntRange(min=1), default=1, show_default=True, help='Number of workers')
@clitools.shared_options('url', 'config', 'path')
@click.option('--burst', '-b', is_flag=True, help='Run in burst mode (each worker quits after all work is done)')
@click.option('--name-prefix', default=None, help='Name workers <PREFIX>-<i>-<6 hex> (default: random hex ids, as rq)')
@clitools.shared_options('results_ttl', 'worker_ttl', 'job_monitoring_interval', 'maintenance_interval')
@click.option(
    '--max-jobs',
    type=click.IntRange(min=1),
    default=None,
    help='Each worker admits this many jobs, then quits and is replaced by a fresh one',
)
@clitools.shared_options('serializer', 'dequeue_strategy')
@click.option('--logging-level', '-l', 'logging_level', type=str, default='INFO', help='Set logging level')
@clitools.shared_options('log_format', 'date_format', 'quiet', 'verbose')
@click.option('--pid', help="Write the pool's process ID number to a file at the specified path")
@clitools.shared_options('exception_handler', 'disable_default_exception_handler', 'disable_job_desc_logging')
@click.option('--job-class', '-j', envvar='RQ_JOB_CLASS', show_envvar=True, help='Job class, as for aiorq worker')
@click.option(
    '--worker-class', '-w', envvar='RQ_WORKER_CLASS', show_envvar=True, help='Worker class, as for aiorq worker'
)
@click.option('--queue-class', envvar='RQ_QUEUE_CLASS', show_envvar=True, help=UNUSED)
@click.option(
    '--connection-class',
    envvar='RQ_CONNECTION_CLASS',
    show_envvar=True,
    help='Redis client class (a redis.asyncio.Redis subclass; redis.Redis means redis.asyncio.Redis)',
)
@clitools.worker_option('with_scheduler', "Workers also run the scheduler (rq's locks: one at a time)")
@clitools.worker_option('cron', 'Workers also run the cron jobs of this rq cron config (each tick enqueued once)')
@clitools.worker_option('concurrency', 'Jobs in flight at once in each worker')
@clitools.worker_option('sync_jobs', 'How plain functions run in each worker: a thread pool, or child processes')
@clitools.worker_option('loop', 'Event loop')
@clitools.worker_option(
    'metrics_port', 'Worker i serves Prometheus metrics on PORT+i-1 (needs `pip install aiorq[metrics]`)'
)
@clitools.worker_option('metrics_host', 'Address the metrics servers listen on (0.0.0.0: every interface)')
@click.argument('queues', nargs=-1)
def worker_pool(**options: Any) -> None:
    """Starts NUM_WORKERS aiorq workers on QUEUES (default: ``default``), each its own process,
    replaced when it ends (except in burst mode); SIGTERM/SIGINT: warm shutdown, again: cold."""
    sys.exit(run_pool(options))
