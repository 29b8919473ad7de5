"""``aiorq dashboard``: serve aiorq's dashboard (``aiorq.web``) with uvicorn.

Loopback by default (``--bind 0.0.0.0`` to serve others, better with ``--username/--password``).
The ``web`` extra is imported only when the command runs, so ``aiorq`` works without it.
``aiorq_worker.cli`` adds the command to ``aiorq``.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Any

import click

from . import clitools
from .clitools import CommandError, fail

DEFAULT_PORT = 9181  # rq-dashboard's
EXTRA_MISSING = "the dashboard needs the web extra: pip install 'aiorq[web]'"


@click.command()
@click.option('--url', '-u', envvar='RQ_REDIS_URL', help='URL describing Redis connection details.')
@click.option('--config', '-c', envvar='RQ_CONFIG', help='Module containing RQ settings (for Redis).')
@click.option(
    '--connection-class',
    envvar='RQ_CONNECTION_CLASS',
    show_envvar=True,
    help='Redis client class (a redis.asyncio.Redis subclass; redis.Redis means redis.asyncio.Redis)',
)
@click.option('--path', '-P', default=['.'], multiple=True, help='Specify the import path.')
@click.option('--bind', '-b', default='127.0.0.1', show_default=True, help='Address to listen on (0.0.0.0: every one)')
@click.option(
    '--port',
    '-p',
    type=click.IntRange(min=0, max=65535),
    default=DEFAULT_PORT,
    envvar='AIORQ_DASHBOARD_PORT',
    show_envvar=True,
    show_default=True,
    help='Port to listen on',
)
@click.option('--username', envvar='AIORQ_DASHBOARD_USERNAME', show_envvar=True, help='HTTP basic auth user name')
@click.option(
    '--password',
    envvar='AIORQ_DASHBOARD_PASSWORD',
    show_envvar=True,
    help='HTTP basic auth password (better from the environment than on the command line)',
)
@click.option('--title', default='aiorq', show_default=True, help='Name shown in the pages')
@click.option(
    '--poll-interval', type=click.FloatRange(min=0.2), default=2.0, show_default=True, help='Live update period (s)'
)
@click.option('--verbose', '-v', is_flag=True, help='Show the traceback of an error, and every request')
def dashboard(**options: Any) -> None:
    """Serves the dashboard: queues, jobs, workers and every execution in flight, live."""
    sys.exit(run_dashboard(options))


def run_dashboard(options: dict[str, Any]) -> int:
    """0 after a stop by SIGINT/SIGTERM; 1 with one line on stderr when it cannot start."""
    ctx = click.get_current_context()
    verbose = options['verbose']
    try:
        import uvicorn

        import aiorq.web
    except ImportError as e:
        if verbose:
            raise
        return fail(ctx, f'{EXTRA_MISSING} ({e})')
    username, password = options['username'], options['password']
    if bool(username) != bool(password):
        clitools.bad(ctx, 'password' if username else 'username', 'give both --username and --password, or neither')
    for path in options['path']:
        sys.path.append(path)  # as rq's CLI does: a settings module or connection class may live there
    try:
        connection = clitools.reading_client(ctx, verbose)
    except CommandError as e:
        return fail(ctx, str(e))
    auth = aiorq.web.BasicAuth(username, password) if username else None
    app = aiorq.web.dashboard(connection, auth=auth, title=options['title'], poll_interval=options['poll_interval'])
    if auth is None and options['bind'] not in ('127.0.0.1', 'localhost', '::1'):
        click.echo(
            f'aiorq dashboard: warning: serving {options["bind"]} without --username/--password: '
            'anyone who reaches it can delete jobs',
            err=True,
        )
    config = uvicorn.Config(
        app,
        host=options['bind'],
        port=options['port'],
        log_level='info' if verbose else 'warning',
        access_log=verbose,
        lifespan='off',
    )
    server = uvicorn.Server(config)

    async def serve() -> None:
        try:
            await server.serve()
        finally:
            await connection.aclose()

    click.echo(f'aiorq dashboard: http://{_host(options["bind"])}:{options["port"]}/ (Ctrl-C stops it)')
    # uvicorn shuts down gracefully on SIGTERM, then raises it again for the handler it found:
    # this one, so a stop by SIGTERM ends with status 0 as one by Ctrl-C does.
    signal.signal(signal.SIGTERM, _stopped)
    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass
    # uvicorn says why it could not start (a port in use) in its own log line and exits 1.
    return 0 if server.started else 1


def _stopped(signum: int, frame: Any) -> None:
    raise SystemExit(0)


def _host(bind: str) -> str:
    return f'[{bind}]' if ':' in bind else bind
