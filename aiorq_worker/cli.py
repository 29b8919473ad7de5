"""``aiorq worker``, ``aiorq cron``, ``aiorq info``: the options of rq 3.0's commands, plus aiorq's own."""

from __future__ import annotations

import asyncio
import gc
import logging
import logging.config
import os
import sys
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import click
from click.core import ParameterSource
from redis.exceptions import RedisError
from rq.defaults import (
    DEFAULT_LOGGING_DATE_FORMAT,
    DEFAULT_LOGGING_FORMAT,
)

import aiorq
from aiorq.protocol.keys import reserved_queue_name

from . import clitools
from .clitools import CommandError, fail
from .cron import CronConfigError
from .dashboard_cli import dashboard
from .metrics import MetricsError
from .pool import worker_pool
from .worker import SuspendedError, install_signal_handlers


def worker_class_option(text: str) -> Any:
    """rq's class options, from the option or the environment as rq's shared options are."""
    return click.option('--worker-class', '-w', envvar='RQ_WORKER_CLASS', show_envvar=True, help=text)


def job_class_option(text: str) -> Any:
    return click.option('--job-class', '-j', envvar='RQ_JOB_CLASS', show_envvar=True, help=text)


def queue_class_option(text: str) -> Any:
    return click.option('--queue-class', envvar='RQ_QUEUE_CLASS', show_envvar=True, help=text)


CONNECTION_CLASS = click.option(
    '--connection-class',
    envvar='RQ_CONNECTION_CLASS',
    show_envvar=True,
    help='Redis client class (a redis.asyncio.Redis subclass; redis.Redis means redis.asyncio.Redis)',
)
UNUSED = "Only rq's or aiorq's default class is accepted: {} uses none"


@click.group()
@click.version_option(package_name='aiorq')
def main() -> None:
    """aiorq: RQ's jobs from asyncio."""


main.add_command(worker_pool)  # ``aiorq worker-pool``: aiorq_worker/pool.py


@main.command()
@clitools.shared_options('url', 'config', 'path')
@click.option('--burst', '-b', is_flag=True, help='Run in burst mode (quit after all work is done)')
@click.option('--name', '-n', help='Specify a different name')
@clitools.shared_options('results_ttl', 'worker_ttl', 'job_monitoring_interval', 'maintenance_interval')
@click.option(
    '--max-jobs', type=click.IntRange(min=1), default=None, help='Maximum number of jobs to admit before quitting'
)
@click.option(
    '--max-idle-time', type=click.IntRange(min=1), default=None, help='Maximum seconds to stay idle before quitting'
)
@clitools.shared_options('serializer', 'dequeue_strategy')
@click.option('--logging_level', type=str, default='INFO', help='Set logging level')
@clitools.shared_options('log_format', 'date_format', 'quiet', 'verbose')
@click.option('--pid', help='Write the process ID number to a file at the specified path')
@clitools.shared_options('exception_handler', 'disable_default_exception_handler', 'disable_job_desc_logging')
@job_class_option('Job class: a subclass of aiorq.Job, what aiorq.get_current_job() returns in jobs')
@worker_class_option('Worker class: a subclass of aiorq_worker.Worker')
@queue_class_option(UNUSED.format('aiorq worker'))
@CONNECTION_CLASS
@clitools.worker_option('with_scheduler', "Run worker with scheduler (rq's locks; one pass in burst mode)")
@clitools.worker_option(
    'cron', "Also run the cron jobs of this rq cron config (a file path or module), as `aiorq cron` does"
)
@clitools.worker_option('concurrency', 'Jobs in flight at once (coroutines on the loop, plain functions in threads)')
@clitools.worker_option(
    'sync_jobs', 'How plain functions run: a thread pool, or child processes (hard timeouts, isolation)'
)
@clitools.worker_option('loop', 'Event loop (uvloop when installed)')
@clitools.worker_option(
    'metrics_port', 'Serve Prometheus metrics on this port at /metrics (needs `pip install aiorq[metrics]`)'
)
@clitools.worker_option('metrics_host', 'Address the metrics server listens on (0.0.0.0: every interface)')
@click.argument('queues', nargs=-1)
def worker(**options: Any) -> None:
    """Starts an aiorq worker on QUEUES (default: ``default``)."""
    sys.exit(run(options))


@dataclass
class _Prepared:
    """What ``aiorq worker`` resolved from its options and settings before the loop starts."""

    worker_class: Any
    job_class: Any
    handlers: list[Any]
    config: dict[str, Any]
    serializer: Any
    connection: Any
    queues: list[str]


def run(options: dict[str, Any]) -> int:
    """0 when the worker ends normally; bad option values are usage errors (exit 2); what goes
    wrong later (settings module, Redis, start-up) is one line on stderr and exit 1, with the
    traceback only under ``--verbose``."""
    ctx = click.get_current_context()
    for path in options['path']:
        sys.path.append(path)  # as rq's CLI does
    prepared = _prepare(ctx, options)
    if isinstance(prepared, int):
        return prepared
    return _run_on_loop(options['loop_name'], _serve(ctx, options, prepared))


def _prepare(ctx: click.Context, options: dict[str, Any]) -> _Prepared | int:
    """Classes, handlers, settings, serializer, client and logging; an exit code on failure."""
    verbose = options['verbose']
    worker_class = clitools.load_class(ctx, 'worker_class', verbose)
    job_class = clitools.load_class(ctx, 'job_class', verbose)
    clitools.load_class(
        ctx, 'queue_class', verbose, no_effect='aiorq worker takes jobs through its protocol layer, not Queue methods'
    )
    handlers = [clitools.imported(ctx, 'exception_handler', h, verbose) for h in options['exception_handler']]
    if options['metrics_port'] is None and ctx.get_parameter_source('metrics_host') is not ParameterSource.DEFAULT:
        clitools.bad(ctx, 'metrics_host', 'serves nothing without --metrics-port')
    for name in options['queues']:
        # A queue whose list is one of rq's own keys: its jobs would be failed as stuck.
        if (reserved := reserved_queue_name(name)) is not None:
            clitools.bad(ctx, 'queues', f'queue name {name!r} is reserved: {reserved}')
    cls = clitools.connection_class(ctx, verbose)
    try:
        config = clitools.settings(ctx, verbose)
        serializer = clitools.serializer(ctx, options['serializer'] or config.get('SERIALIZER'), verbose)
        connection = clitools.redis_client(ctx, config, cls)
        clitools.logging_and_pid(options, config)
    except (CommandError, OSError) as e:
        return fail(ctx, str(e))
    queues = list(options['queues']) or list(config.get('QUEUES', [])) or ['default']
    for name in queues:
        if (reserved := reserved_queue_name(name)) is not None:  # given by the settings module
            return fail(ctx, f'QUEUES: queue name {name!r} is reserved: {reserved}')
    return _Prepared(worker_class, job_class, handlers, config, serializer, connection, queues)


def _run_on_loop(loop_name: str | None, main: Coroutine[Any, Any, int]) -> int:
    """Run ``main`` on uvloop (the default when installed) or asyncio's loop."""
    if loop_name is None:
        try:
            import uvloop  # noqa: F401

            loop_name = 'uvloop'
        except ImportError:
            loop_name = 'asyncio'
    if loop_name == 'uvloop':
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)


def _build_worker(options: dict[str, Any], prepared: _Prepared) -> Any:
    return prepared.worker_class(
        prepared.queues,
        prepared.connection,
        name=options['name'] or prepared.config.get('NAME'),
        concurrency=options['concurrency'],
        default_result_ttl=options['results_ttl'],
        worker_ttl=options['worker_ttl'],
        job_monitoring_interval=options['job_monitoring_interval'],
        maintenance_interval=options['maintenance_interval'],
        serializer=prepared.serializer,
        exception_handlers=prepared.handlers,
        disable_default_exception_handler=options['disable_default_exception_handler'],
        log_job_description=not options['disable_job_desc_logging'],
        dequeue_strategy=options['dequeue_strategy'],
        sync_jobs=options['sync_jobs'],
        **({'job_class': prepared.job_class} if prepared.job_class is not aiorq.Job else {}),
        **(
            {'metrics_port': options['metrics_port'], 'metrics_address': options['metrics_host']}
            if options['metrics_port'] is not None
            else {}
        ),
    )


def _start_refused(e: Exception) -> str:
    """The line for a worker that refused to start (suspended, a bad --cron, metrics unavailable)."""
    if isinstance(e, CronConfigError):
        return f'aiorq worker: --cron: {e}'
    if isinstance(e, MetricsError):
        return f'aiorq worker: --metrics-port: {e}'
    return str(e)


async def _serve(ctx: click.Context, options: dict[str, Any], prepared: _Prepared) -> int:
    """Build the worker and run it until it stops; what goes wrong is one line and exit 1."""
    try:
        w = _build_worker(options, prepared)
        install_signal_handlers(w)
        # What start-up made (rq, redis-py, the settings, the worker: ~60k objects) lives as long
        # as the process: out of the collector's sight, a full collection no longer walks it
        # (one took 10-20 ms, a pause every job running then waits out).
        gc.collect()
        gc.freeze()
        await w.work(
            burst=options['burst'],
            max_jobs=options['max_jobs'],
            max_idle_time=options['max_idle_time'],
            with_scheduler=options['with_scheduler'],
            cron=options['cron_config'],
        )
        if w.cold_shutdown and w.busy_threads:
            # Threads cannot be stopped and the interpreter would wait for them at exit: a
            # cold shutdown ends the process now, as rq's kills its work horse.
            logging.getLogger('aiorq.worker').warning(
                'Worker %s: %d job threads still running; exiting without them', w.name, w.busy_threads
            )
            logging.shutdown()
            os._exit(0)
        return 0
    except (SuspendedError, CronConfigError, MetricsError) as e:
        click.echo(_start_refused(e), err=True)
        return 1
    except RedisError as e:
        # Unreachable, refused credentials, a certificate that does not verify: one line
        # (redis-py's messages name the host and port, never the password), not a traceback.
        if options['verbose']:
            raise
        return fail(ctx, f'Redis error: {type(e).__name__}: {e}')
    except Exception as e:
        # A worker class that does not start, a name in use, a settings value it refuses.
        if options['verbose']:
            raise
        return fail(ctx, f'{type(e).__name__}: {e} (--verbose shows the traceback)')
    finally:
        await prepared.connection.aclose()


@main.command()
@click.option('--url', '-u', envvar='RQ_REDIS_URL', help='URL describing Redis connection details.')
@click.option('--config', '-c', envvar='RQ_CONFIG', help='Module containing RQ settings.')
@worker_class_option(UNUSED.format('aiorq cron'))
@job_class_option(UNUSED.format('aiorq cron'))
@queue_class_option(UNUSED.format('aiorq cron'))
@CONNECTION_CLASS
@click.option('--path', '-P', default=['.'], multiple=True, help='Specify the import path.')
@click.option(
    '--serializer',
    '-S',
    default=None,
    help="Accepted for compatibility: cron jobs always use rq's default (pickle) serializer, as with rq cron",
)
@click.option(
    '--logging-level',
    '-l',
    type=click.Choice(['DEBUG', 'INFO', 'WARNING', 'ERROR', 'CRITICAL'], case_sensitive=False),
    default='INFO',
    show_default=True,
    help='Set logging level.',
)
@click.option('--name', '-n', default=None, help='Cron scheduler name (default <hostname>:<pid>:<6 hex>, as rq)')
@click.option('--verbose', '-v', is_flag=True, help='Show the traceback of an error')
@click.argument('config_path')
def cron(**options: Any) -> None:
    """Starts the cron scheduler on CONFIG_PATH, an rq cron config (file path or module path).

    Several ``aiorq cron`` processes (or workers started with ``--cron``) can run the same
    config: each tick of each cron job is enqueued once. See docs/cron.md.
    """
    sys.exit(run_cron(options))


def run_cron(options: dict[str, Any]) -> int:
    """``aiorq cron``: 0 after a stop by SIGINT/SIGTERM, 1 with one line on stderr on bad input."""
    import signal

    from redis.exceptions import RedisError

    from .cron import CronConfigError, CronRunner

    ctx = click.get_current_context()
    verbose = options['verbose']
    for path in options['path']:
        sys.path.append(path)  # as rq's CLI does
    # rq cron imports these and uses none; aiorq cron says so rather than ignore them.
    enqueues = 'aiorq cron enqueues through its protocol layer'
    clitools.load_class(ctx, 'worker_class', verbose, no_effect='aiorq cron runs no jobs')
    clitools.load_class(ctx, 'job_class', verbose, no_effect=f'{enqueues}, not Job methods')
    clitools.load_class(ctx, 'queue_class', verbose, no_effect=f'{enqueues}, not Queue methods')
    cls = clitools.connection_class(ctx, verbose)
    try:
        settings = clitools.settings(ctx, verbose)
        connection = clitools.redis_client(ctx, settings, cls)
    except CommandError as e:
        return fail(ctx, str(e))
    if settings.get('DICT_CONFIG'):
        logging.config.dictConfig(settings['DICT_CONFIG'])
    else:
        logging.basicConfig(
            level=options['logging_level'].upper(), format=DEFAULT_LOGGING_FORMAT, datefmt=DEFAULT_LOGGING_DATE_FORMAT
        )
    if options['serializer']:
        logging.getLogger('aiorq.cron').info("Cron jobs use rq's default serializer; --serializer is not used")

    async def serve() -> None:
        try:
            runner = CronRunner(connection, options['config_path'], name=options['name'])
            runner.load()
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await runner.run(stop)
        finally:
            await connection.aclose()

    try:
        asyncio.run(serve())
    except CronConfigError as e:
        if verbose:
            raise
        return fail(ctx, str(e))
    except (RedisError, OSError) as e:
        if verbose:
            raise
        return fail(ctx, f'Redis error: {type(e).__name__}: {e}')
    except KeyboardInterrupt:
        click.echo('\nShutting down cron scheduler...')
    return 0


@main.command()
@click.option('--url', '-u', envvar='RQ_REDIS_URL', help='URL describing Redis connection details.')
@click.option('--config', '-c', envvar='RQ_CONFIG', help='Module containing RQ settings.')
@worker_class_option(UNUSED.format('aiorq info'))
@job_class_option('Job class: a subclass of aiorq.Job, used to read the jobs in flight')
@queue_class_option('Queue class: a subclass of aiorq.Queue, used to read the queues')
@CONNECTION_CLASS
@click.option('--path', '-P', default=['.'], multiple=True, help='Specify the import path.')
@click.option(
    '--serializer', '-S', default=None, help='Accepted as rq info accepts it: aiorq info never deserializes job data'
)
@click.option(
    '--interval', '-i', type=click.FloatRange(min=0), help="Updates stats every N seconds (default: don't poll)"
)
@click.option('--raw', '-r', is_flag=True, help='Print only the raw numbers, no bar charts')
@click.option('--only-queues', '-Q', is_flag=True, help='Show only queue info')
@click.option('--only-workers', '-W', is_flag=True, help='Show only worker info')
@click.option('--by-queue', '-R', is_flag=True, help='Shows workers by queue')
@click.option('--verbose', '-v', is_flag=True, help='Show the traceback of an error')
@click.argument('queues', nargs=-1)
def info(**options: Any) -> None:
    """What `rq info` shows, plus each worker's jobs in flight and each aiorq worker's concurrency."""
    sys.exit(run_info(options))


def run_info(options: dict[str, Any]) -> int:
    """0 after one report (or an interrupted ``--interval`` loop); 1 with one line on stderr."""
    from .info import Info

    ctx = click.get_current_context()
    verbose = options['verbose']
    for path in options['path']:
        sys.path.append(path)  # as rq's CLI does
    every_worker = "aiorq info reads every worker's record, whatever its class"
    clitools.load_class(ctx, 'worker_class', verbose, no_effect=every_worker)
    job_class = clitools.load_class(ctx, 'job_class', verbose)
    queue_class = clitools.load_class(ctx, 'queue_class', verbose)
    serializer = clitools.serializer(ctx, options['serializer'], verbose)
    try:
        connection = clitools.reading_client(ctx, verbose)
    except CommandError as e:
        return fail(ctx, str(e))
    report = Info(connection, queue_class, job_class, serializer, raw=options['raw'], by_queue=options['by_queue'])

    async def serve() -> None:
        try:
            await report.run(options['queues'], options['interval'], options['only_queues'], options['only_workers'])
        finally:
            await connection.aclose()

    try:
        asyncio.run(serve())
    except (RedisError, OSError) as e:
        if verbose:
            raise
        return fail(ctx, f'Redis error: {type(e).__name__}: {e}')
    except KeyboardInterrupt:
        click.echo()
    return 0


main.add_command(dashboard)
