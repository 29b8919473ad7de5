"""``aiorq worker``: the options of rq 3.0's ``rq worker``, plus aiorq's own."""

from __future__ import annotations

import asyncio
import logging
import logging.config
import os
import sys
from typing import Any

import click
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

from .worker import DEFAULT_CONCURRENCY, SuspendedError, Worker, install_signal_handlers


def _redis(url: str | None, config: dict[str, Any], connection_class: str | None) -> Any:
    """rq's order: ``--url``, else the config module's settings, else the environment
    (``REDIS_URL``, ``REDIS_HOST``, ``REDIS_PORT``, ``REDIS_DB``, ``REDIS_PASSWORD``, ``REDIS_SSL`` …)."""
    from redis.asyncio import Redis
    from rq.cli.helpers import get_redis_from_config

    cls: Any = import_attribute(connection_class) if connection_class else Redis
    if url:
        return cls.from_url(url)
    return get_redis_from_config(config if config else dict(os.environ), cls)


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
@click.option('--with-scheduler', is_flag=True, help='Run the scheduler (not supported yet)')
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
    if options['with_scheduler']:
        click.echo(
            'aiorq worker: --with-scheduler is not supported yet; run a stock `rq worker --with-scheduler` '
            'beside it for scheduled jobs',
            err=True,
        )
        return 2
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
            await w.work(burst=options['burst'], max_jobs=options['max_jobs'], max_idle_time=options['max_idle_time'])
            return 0
        except SuspendedError as e:
            click.echo(str(e), err=True)
            return 1
        finally:
            await connection.aclose()

    if loop_name == 'uvloop':
        import uvloop

        return uvloop.run(serve())
    return asyncio.run(serve())
