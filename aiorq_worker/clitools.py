"""What the ``aiorq`` commands share: rq's class options (used where aiorq can use the class,
refused in one line where it cannot), the settings module, the Redis client, one-line errors.

rq 3.0's CLI takes ``-w``/``-j``/``--queue-class``/``--connection-class`` from the option or the
``RQ_WORKER_CLASS``/``RQ_JOB_CLASS``/``RQ_QUEUE_CLASS``/``RQ_CONNECTION_CLASS`` environment
variables, never from the ``-c`` settings module; so do these commands.
"""

from __future__ import annotations

import importlib
import logging
import logging.config
import os
from collections.abc import Callable
from typing import Any, NoReturn

import click
import redis
import rq.job
import rq.queue
import rq.worker
from click.core import ParameterSource
from redis.asyncio import Redis
from rq.cli.helpers import read_config_file
from rq.defaults import (
    DEFAULT_JOB_MONITORING_INTERVAL,
    DEFAULT_LOGGING_DATE_FORMAT,
    DEFAULT_LOGGING_FORMAT,
    DEFAULT_MAINTENANCE_TASK_INTERVAL,
    DEFAULT_RESULT_TTL,
    DEFAULT_WORKER_TTL,
)
from rq.serializers import resolve_serializer
from rq.utils import import_attribute

import aiorq

from .settings import DEFAULT_CONCURRENCY
from .worker import Worker

# Per class option: aiorq's class, rq's default for the same option, rq's base class.
_AIORQ: dict[str, type] = {'worker_class': Worker, 'job_class': aiorq.Job, 'queue_class': aiorq.Queue}
_STOCK: dict[str, type] = {'worker_class': rq.worker.Worker, 'job_class': rq.job.Job, 'queue_class': rq.queue.Queue}
_STOCK_BASE: dict[str, type] = {
    'worker_class': rq.worker.BaseWorker,
    'job_class': rq.job.Job,
    'queue_class': rq.queue.Queue,
}
_LABEL = {'worker_class': 'aiorq_worker.Worker', 'job_class': 'aiorq.Job', 'queue_class': 'aiorq.Queue'}


class CommandError(Exception):
    """Ends a command with ``aiorq <command>: <message>`` on stderr and exit status 1."""


def fail(ctx: click.Context, message: str) -> int:
    click.echo(f'aiorq {ctx.info_name}: {message}', err=True)
    return 1


def bad(ctx: click.Context, name: str, message: str) -> NoReturn:
    """A usage error (exit 2) on option ``name``, naming the environment variable it came from."""
    param = next(p for p in ctx.command.params if p.name == name)
    if ctx.get_parameter_source(name) is ParameterSource.ENVIRONMENT and isinstance(param.envvar, str):
        message = f'{message} (from ${param.envvar})'
    raise click.BadParameter(message, ctx=ctx, param=param)


def _why(value: Any, error: Exception) -> str:
    """``error`` as one line; rq says "Invalid attribute name" also when the module is missing."""
    if isinstance(error, ValueError) and isinstance(value, str) and '.' in value:
        try:
            importlib.import_module(value.rpartition('.')[0])
        except Exception as e:
            error = e
    return f'{type(error).__name__}: {error}'


def imported(ctx: click.Context, name: str, value: str, verbose: bool) -> Any:
    try:
        return import_attribute(value)
    except Exception as e:  # the module itself may raise anything while importing
        if verbose:
            raise
        bad(ctx, name, f'cannot import {value!r}: {_why(value, e)}')


def load_class(ctx: click.Context, name: str, verbose: bool, no_effect: str | None = None) -> Any:
    """The class option ``name`` gives. Unset, or naming aiorq's class or rq's default class:
    aiorq's class. A subclass of aiorq's class: itself, unless the command cannot use one
    (``no_effect`` says why). Anything else: a usage error."""
    value = ctx.params.get(name)
    default = _AIORQ[name]
    if not value:
        return default
    cls = imported(ctx, name, value, verbose)
    if not isinstance(cls, type):
        bad(ctx, name, f'{value!r} is not a class')
    if name == 'worker_class' and no_effect is None and issubclass(cls, rq.worker.BaseWorker):
        bad(ctx, name, f"{value!r} is stock rq's worker: run it with `rq worker`, or give a subclass of {_LABEL[name]}")
    if cls is default or cls is _STOCK[name]:
        return default
    if no_effect is not None:
        bad(ctx, name, f'{value!r} has no effect here: {no_effect}')
    if issubclass(cls, default):
        return cls
    if issubclass(cls, _STOCK_BASE[name]):
        bad(ctx, name, f'{value!r} is a stock rq class, which aiorq does not use: give a subclass of {_LABEL[name]}')
    bad(ctx, name, f'{value!r} is not a subclass of {_LABEL[name]}')


def connection_class(ctx: click.Context, verbose: bool) -> Any:
    """``--connection-class``: a ``redis.asyncio.Redis`` subclass (rq's default ``redis.Redis``
    means ``redis.asyncio.Redis``)."""
    value = ctx.params.get('connection_class')
    if not value:
        return Redis
    cls = imported(ctx, 'connection_class', value, verbose)
    if cls is redis.Redis:
        return Redis
    if isinstance(cls, type) and issubclass(cls, Redis):
        return cls
    if isinstance(cls, type) and issubclass(cls, redis.Redis):
        bad(ctx, 'connection_class', f'{value!r} is a blocking client: give a subclass of redis.asyncio.Redis')
    bad(ctx, 'connection_class', f'{value!r} is not a subclass of redis.asyncio.Redis')


def serializer(ctx: click.Context, value: Any, verbose: bool) -> Any:
    try:
        return resolve_serializer(value)
    except Exception as e:
        if verbose:
            raise
        bad(ctx, 'serializer', _why(value, e))


def settings(ctx: click.Context, verbose: bool) -> dict[str, Any]:
    """The ``-c`` module's UPPERCASE settings, as rq reads them."""
    module = ctx.params.get('config')
    if not module:
        return {}
    try:
        return read_config_file(module)
    except Exception as e:
        if verbose:
            raise
        raise CommandError(f"cannot import settings module '{module}': {type(e).__name__}: {e}") from e


def redis_client(ctx: click.Context, config: dict[str, Any], cls: Any) -> Any:
    """rq's order: ``--url``, else the settings module's ``REDIS_URL``, ``SENTINEL`` (an asyncio
    Sentinel client), ``REDIS_HOST`` …, else the same names from the environment."""
    from aiorq.connections import SOCKET_TIMEOUT, redis_from_config

    url = ctx.params.get('url')
    if url:
        try:
            # redis-py 8's default socket timeout on every redis-py (a URL's own one wins).
            return cls.from_url(url, socket_timeout=SOCKET_TIMEOUT)
        except ValueError as e:
            bad(ctx, 'url', str(e))
    try:
        return redis_from_config(config if config else dict(os.environ), cls)
    except (ValueError, TypeError) as e:
        raise CommandError(f'bad Redis settings: {e}') from e


def logging_and_pid(options: dict[str, Any], config: dict[str, Any]) -> None:
    """Logging as the settings' DICT_CONFIG says, else at the options' level and in their formats
    (what ``logging`` refuses is a :class:`CommandError`); then the process id written to
    ``--pid`` when given. ``aiorq worker`` and ``aiorq worker-pool`` (which logs as its workers)."""
    try:
        if config.get('DICT_CONFIG'):
            logging.config.dictConfig(config['DICT_CONFIG'])
        else:
            level = 'DEBUG' if options['verbose'] else 'WARNING' if options['quiet'] else options['logging_level']
            logging.basicConfig(level=level.upper(), format=options['log_format'], datefmt=options['date_format'])
    except ValueError as e:  # an unknown level, a DICT_CONFIG that logging refuses
        raise CommandError(f'logging: {e}') from e
    if options['pid']:
        with open(os.path.expanduser(options['pid']), 'w') as f:
            f.write(str(os.getpid()))


def reading_client(ctx: click.Context, verbose: bool) -> Any:
    """The client of a command that reads and manages Redis but runs no job (``aiorq info``,
    ``aiorq dashboard``): as ``rq info``, the settings module only matters for finding Redis."""
    cls = connection_class(ctx, verbose)
    config = {} if ctx.params.get('url') else settings(ctx, verbose)
    return redis_client(ctx, config, cls)


# -- the options `aiorq worker` and `aiorq worker-pool` share, spelled as rq's worker spells them ----

SHARED_OPTIONS: dict[str, Callable[[Any], Any]] = {
    'url': click.option('--url', '-u', envvar='RQ_REDIS_URL', help='URL describing Redis connection details.'),
    'config': click.option('--config', '-c', envvar='RQ_CONFIG', help='Module containing RQ settings.'),
    'path': click.option('--path', '-P', default=['.'], multiple=True, help='Specify the import path.'),
    'results_ttl': click.option(
        '--results-ttl', type=int, default=DEFAULT_RESULT_TTL, help='Default results timeout to be used'
    ),
    'worker_ttl': click.option(
        '--worker-ttl', type=click.IntRange(min=1), default=DEFAULT_WORKER_TTL, help='Worker timeout to be used'
    ),
    'job_monitoring_interval': click.option(
        '--job-monitoring-interval',
        type=click.IntRange(min=1),
        default=DEFAULT_JOB_MONITORING_INTERVAL,
        help='Default job monitoring interval to be used',
    ),
    'maintenance_interval': click.option(
        '--maintenance-interval',
        type=click.IntRange(min=1),
        default=DEFAULT_MAINTENANCE_TASK_INTERVAL,
        help='Maintenance task interval (in seconds) to be used',
    ),
    'serializer': click.option(
        '--serializer', '-S', default=None, help='Path to serializer, defaults to rq.serializers.DefaultSerializer'
    ),
    'dequeue_strategy': click.option(
        '--dequeue-strategy',
        '-ds',
        default='default',
        type=click.Choice(['default', 'round_robin', 'random']),
        help='Sets a custom stratey to dequeue from multiple queues',
    ),
    'log_format': click.option(
        '--log-format', type=str, default=DEFAULT_LOGGING_FORMAT, help='Set the format of the logs'
    ),
    'date_format': click.option(
        '--date-format', type=str, default=DEFAULT_LOGGING_DATE_FORMAT, help='Set the date format of the logs'
    ),
    'quiet': click.option('--quiet', '-q', is_flag=True, help='Show less output'),
    'verbose': click.option('--verbose', '-v', is_flag=True, help='Show more output'),
    'exception_handler': click.option('--exception-handler', multiple=True, help='Exception handler(s) to use'),
    'disable_default_exception_handler': click.option(
        '--disable-default-exception-handler', '-d', is_flag=True, help='Disable RQ default exception handler'
    ),
    'disable_job_desc_logging': click.option(
        '--disable-job-desc-logging', is_flag=True, help='Turn off description logging.'
    ),
}


def shared_options(*names: str) -> Callable[[Any], Any]:
    """The named :data:`SHARED_OPTIONS`, in the order given (as ``--help`` lists them)."""

    def apply(command: Any) -> Any:
        for name in reversed(names):
            command = SHARED_OPTIONS[name](command)
        return command

    return apply


# -- options both commands take whose help differs (one worker, or each worker of a pool) ---------

_WORKER_OPTIONS: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    'with_scheduler': (('--with-scheduler', '-s'), {'is_flag': True}),
    'cron': (('--cron', 'cron_config'), {'default': None, 'metavar': 'CONFIG_PATH'}),
    'concurrency': (
        ('--concurrency',),
        {'type': click.IntRange(min=1), 'default': DEFAULT_CONCURRENCY, 'show_default': True},
    ),
    'sync_jobs': (
        ('--sync-jobs',),
        {'type': click.Choice(['thread', 'process']), 'default': 'thread', 'show_default': True},
    ),
    'loop': (('--loop', 'loop_name'), {'type': click.Choice(['uvloop', 'asyncio']), 'default': None}),
    'metrics_port': (('--metrics-port',), {'type': click.IntRange(min=1, max=65535), 'default': None}),
    'metrics_host': (('--metrics-host',), {'default': '127.0.0.1', 'show_default': True}),
}


def worker_option(name: str, help: str) -> Callable[[Any], Any]:
    """One of :data:`_WORKER_OPTIONS`, with the command's own help text."""
    decls, attrs = _WORKER_OPTIONS[name]
    return click.option(*decls, help=help, **attrs)
