"""``aiorq worker``: the options of rq 3.0's ``rq worker``, plus aiorq's own."""

from __future__ import annotations

import asyncio
import logging
import logging.config
import os
import sys
from typing import Any

import click
from redis.exceptions import RedisError
from rq.cli.helpers import read_config_file
from rq.defaults import (
    DEFAULT_JOB_MONITORING_INTERVAL,
    DEFAULT_LOGGING_DATE_FORMAT,
    DEFAULT_LOGGING_FORMAT,
    DEFAULT_MAINTENANCE_TASK_INTERVAL,
    DEFAULT_RESULT_TTL,
    DEFAULT_WORKER_TTL,
)
from rq.utils import import_attribute

from .cron import CronConfigError
from .worker import DEFAULT_CONCURRENCY, SuspendedError, Worker, install_signal_handlers


def _redis(url: str | None, config: dict[str, Any], connection_class: str | None) -> Any:
    """rq's order: ``--url``, else the config module's settings (``REDIS_URL``, ``SENTINEL`` as an
    asyncio Sentinel client, ``REDIS_HOST`` …), else the environment (``REDIS_URL``,
    ``REDIS_HOST``, ``REDIS_PORT``, ``REDIS_DB``, ``REDIS_PASSWORD``, ``REDIS_SSL`` …)."""
    from redis.asyncio import Redis

    from aiorq.connections import redis_from_config

    cls: Any = import_attribute(connection_class) if connection_class else Redis
    if url:
        return cls.from_url(url)
    return redis_from_config(config if config else dict(os.environ), cls)


@click.group()
@click.version_option(package_name='aiorq')
def main() -> None:
    """aiorq: RQ's jobs from asyncio."""


@main.command()
@click.option('--url', '-u', envvar='RQ_REDIS_URL', help='URL describing Redis connection details.')
@click.option('--config', '-c', envvar='RQ_CONFIG', help='Module containing RQ settings.')
@click.option('--path', '-P', default=['.'], multiple=True, help='Specify the import path.')
@click.option('--burst', '-b', is_flag=True, help='Run in burst mode (quit after all work is done)')
@click.option('--name', '-n', help='Specify a different name')
@click.option('--results-ttl', type=int, default=DEFAULT_RESULT_TTL, help='Default results timeout to be used')
@click.option('--worker-ttl', type=int, default=DEFAULT_WORKER_TTL, help='Worker timeout to be used')
@click.option(
    '--job-monitoring-interval',
    type=int,
    default=DEFAULT_JOB_MONITORING_INTERVAL,
    help='Default job monitoring interval to be used',
)
@click.option(
    '--maintenance-interval',
    type=int,
    default=DEFAULT_MAINTENANCE_TASK_INTERVAL,
    help='Maintenance task interval (in seconds) to be used',
)
@click.option('--max-jobs', type=int, default=None, help='Maximum number of jobs to admit before quitting')
@click.option('--max-idle-time', type=int, default=None, help='Maximum seconds to stay idle before quitting')
@click.option(
    '--serializer', '-S', default=None, help='Path to serializer, defaults to rq.serializers.DefaultSerializer'
)
@click.option(
    '--dequeue-strategy',
    '-ds',
    default='default',
    type=click.Choice(['default', 'round_robin', 'random']),
    help='Sets a custom stratey to dequeue from multiple queues',
)
@click.option('--logging_level', type=str, default='INFO', help='Set logging level')
@click.option('--log-format', type=str, default=DEFAULT_LOGGING_FORMAT, help='Set the format of the logs')
@click.option('--date-format', type=str, default=DEFAULT_LOGGING_DATE_FORMAT, help='Set the date format of the logs')
@click.option('--quiet', '-q', is_flag=True, help='Show less output')
@click.option('--verbose', '-v', is_flag=True, help='Show more output')
@click.option('--pid', help='Write the process ID number to a file at the specified path')
@click.option('--exception-handler', multiple=True, help='Exception handler(s) to use')
@click.option('--disable-default-exception-handler', '-d', is_flag=True, help='Disable RQ default exception handler')
@click.option('--disable-job-desc-logging', is_flag=True, help='Turn off description logging.')
@click.option('--job-class', '-j', help='RQ Job class to use (accepted for compatibility; aiorq decodes jobs itself)')
@click.option('--worker-class', '-w', help='Worker class to use (a subclass of aiorq_worker.Worker)')
@click.option('--queue-class', help='Queue class to use (accepted for compatibility)')
@click.option('--connection-class', help='redis.asyncio client class to use')
@click.option(
    '--with-scheduler', '-s', is_flag=True, help="Run worker with scheduler (rq's locks; one pass in burst mode)"
)
@click.option(
    '--cron',
    'cron_config',
    default=None,
    metavar='CONFIG_PATH',
    help="Also run the cron jobs of this rq cron config (a file path or module), as `aiorq cron` does",
)
@click.option(
    '--concurrency',
    type=int,
    default=DEFAULT_CONCURRENCY,
    show_default=True,
    help='Jobs in flight at once (coroutines on the loop, plain functions in threads)',
)
@click.option(
    '--sync-jobs',
    type=click.Choice(['thread', 'process']),
    default='thread',
    show_default=True,
    help='How plain functions run: a thread pool, or child processes (hard timeouts, isolation)',
)
@click.option(
    '--loop',
    'loop_name',
    type=click.Choice(['uvloop', 'asyncio']),
    default=None,
    help='Event loop (uvloop when installed)',
)
@click.argument('queues', nargs=-1)
def worker(**options: Any) -> None:
    """Starts an aiorq worker on QUEUES (default: ``default``)."""
    sys.exit(run(options))


def _logging(options: dict[str, Any], config: dict[str, Any]) -> None:
    if config.get('DICT_CONFIG'):
        logging.config.dictConfig(config['DICT_CONFIG'])
        return
    level = 'DEBUG' if options['verbose'] else 'WARNING' if options['quiet'] else options['logging_level']
    logging.basicConfig(level=level.upper(), format=options['log_format'], datefmt=options['date_format'])


def run(options: dict[str, Any]) -> int:
    for path in options['path']:
        sys.path.append(path)  # as rq's CLI does
    config = read_config_file(options['config']) if options['config'] else {}
    _logging(options, config)
    queues = list(options['queues']) or list(config.get('QUEUES', [])) or ['default']
    if options['pid']:
        with open(os.path.expanduser(options['pid']), 'w') as f:
            f.write(str(os.getpid()))
    handlers = [import_attribute(h) for h in options['exception_handler']]
    worker_class = import_attribute(options['worker_class']) if options['worker_class'] else Worker
    loop_name = options['loop_name']
    if loop_name is None:
        try:
            import uvloop  # noqa: F401

            loop_name = 'uvloop'
        except ImportError:
            loop_name = 'asyncio'

    async def serve() -> int:
        connection = _redis(options['url'], config, options['connection_class'])
        try:
            w = worker_class(
                queues,
                connection,
                name=options['name'] or config.get('NAME'),
                concurrency=options['concurrency'],
                default_result_ttl=options['results_ttl'],
                worker_ttl=options['worker_ttl'],
                job_monitoring_interval=options['job_monitoring_interval'],
                maintenance_interval=options['maintenance_interval'],
                serializer=options['serializer'] or config.get('SERIALIZER'),
                exception_handlers=handlers,
                disable_default_exception_handler=options['disable_default_exception_handler'],
                log_job_description=not options['disable_job_desc_logging'],
                dequeue_strategy=options['dequeue_strategy'],
                sync_jobs=options['sync_jobs'],
            )
            install_signal_handlers(w)
            await w.work(
                burst=options['burst'],
                max_jobs=options['max_jobs'],
                max_idle_time=options['max_idle_time'],
                with_scheduler=options['with_scheduler'],
                cron=options['cron_config'],
            )
            return 0
        except SuspendedError as e:
            click.echo(str(e), err=True)
            return 1
        except CronConfigError as e:
            click.echo(f'aiorq worker: --cron: {e}', err=True)
            return 1
        except RedisError as e:
            # Unreachable, refused credentials, a certificate that does not verify: one line
            # (redis-py's messages name the host and port, never the password), not a traceback.
            if options['verbose']:
                raise
            click.echo(f'aiorq worker: Redis error: {type(e).__name__}: {e}', err=True)
            return 1
        finally:
            await connection.aclose()

    if loop_name == 'uvloop':
        import uvloop

        return uvloop.run(serve())
    return asyncio.run(serve())


@main.command()
@click.option('--url', '-u', envvar='RQ_REDIS_URL', help='URL describing Redis connection details.')
@click.option('--config', '-c', envvar='RQ_CONFIG', help='Module containing RQ settings.')
@click.option('--worker-class', '-w', help='Accepted for compatibility with rq cron (unused)')
@click.option('--job-class', '-j', help='Accepted for compatibility with rq cron (unused)')
@click.option('--queue-class', help='Accepted for compatibility with rq cron (unused)')
@click.option('--connection-class', help='redis.asyncio client class to use')
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

    def fail(message: str) -> int:
        click.echo(f'aiorq cron: {message}', err=True)
        return 1

    for path in options['path']:
        sys.path.append(path)  # as rq's CLI does
    try:
        settings = read_config_file(options['config']) if options['config'] else {}
    except Exception as e:
        if options['verbose']:
            raise
        return fail(f"cannot import settings module '{options['config']}': {type(e).__name__}: {e}")
    if settings.get('DICT_CONFIG'):
        logging.config.dictConfig(settings['DICT_CONFIG'])
    else:
        logging.basicConfig(
            level=options['logging_level'].upper(), format=DEFAULT_LOGGING_FORMAT, datefmt=DEFAULT_LOGGING_DATE_FORMAT
        )
    if options['serializer']:
        logging.getLogger('aiorq.cron').info("Cron jobs use rq's default serializer; --serializer is not used")

    async def serve() -> None:
        connection = _redis(options['url'], settings, options['connection_class'])
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
        if options['verbose']:
            raise
        return fail(str(e))
    except (RedisError, OSError) as e:
        if options['verbose']:
            raise
        return fail(f'Redis error: {type(e).__name__}: {e}')
    except KeyboardInterrupt:
        click.echo('\nShutting down cron scheduler...')
    return 0
