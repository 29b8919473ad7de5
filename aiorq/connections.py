"""Connections: any ``redis.asyncio.Redis``, plus the seed's connection stack.

rq 3.0 has no implicit connections; aiorq keeps ``push_connection``/``pop_connection``/
``get_current_connection`` from its 2016 API. The stack lives in a ContextVar holding an
immutable tuple, so a task sees what was pushed before it was created and never a sibling's
pushes.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import socket
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from typing import Any, cast

import redis
from redis.asyncio import Redis
from redis.asyncio.connection import ConnectionPool, SSLConnection, UnixDomainSocketConnection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.backoff import NoBackoff
from rq.connections import NoRedisConnectionException

__all__ = [
    'NoRedisConnectionException',
    'push_connection',
    'pop_connection',
    'get_current_connection',
    'resolve_connection',
    'from_url',
    'CheckedConnectionPool',
    'url_from_env',
    'sync_connection',
    'async_connection',
    'blocking_client',
    'endpoint',
    'Endpoint',
    'SentinelTarget',
    'redis_from_config',
]

_stack: ContextVar[tuple[Redis, ...]] = ContextVar('aiorq_connection_stack', default=())

# A client aiorq creates itself gives up quickly on an unreachable server, and on a server that
# stops answering after redis-py 8's default socket timeout, which older redis-py does not have.
CONNECT_TIMEOUT = 1.0
SOCKET_TIMEOUT = 5.0


def push_connection(connection: Redis) -> None:
    """Make ``connection`` the current one for this context and the tasks it creates."""
    _stack.set((*_stack.get(), connection))


def pop_connection() -> Redis:
    stack = _stack.get()
    if not stack:
        raise NoRedisConnectionException('No Redis connection to pop: the connection stack is empty')
    _stack.set(stack[:-1])
    return stack[-1]


def get_current_connection() -> Redis:
    stack = _stack.get()
    if not stack:
        raise NoRedisConnectionException(
            'No Redis connection: pass connection= or call aiorq.push_connection(redis) first'
        )
    return stack[-1]


def current_connection_or_none() -> Redis | None:
    stack = _stack.get()
    return stack[-1] if stack else None


def resolve_connection(connection: Redis | None = None) -> Redis:
    return connection if connection is not None else get_current_connection()


def url_from_env(default: str | None = None) -> str | None:
    """``RQ_REDIS_URL`` first (rq's CLI variable), then ``REDIS_URL``."""
    return os.environ.get('RQ_REDIS_URL') or os.environ.get('REDIS_URL') or default


def from_url(url: str, **kwargs: Any) -> Redis:
    """A raw-bytes async client that fails fast when the server cannot be reached or stops
    answering (a 5 s socket timeout, redis-py 8's default, on every redis-py), never sends
    a command twice, and never sends one on a connection the server has already closed (see
    :class:`CheckedConnectionPool`).

    ``retry`` defaults to no retries: a command is only ever resent by code that knows it is
    safe to (the worker's claims and outcomes carry ids for that). The retry policy is
    ``redis.asyncio.retry.Retry`` (which every redis-py from 5.0 has): redis-py 8.2 warns when
    an asyncio client is handed the blocking ``redis.retry.Retry``.
    """
    kwargs.setdefault('socket_connect_timeout', CONNECT_TIMEOUT)
    kwargs.setdefault('socket_timeout', SOCKET_TIMEOUT)
    kwargs.setdefault('retry', Retry(NoBackoff(), 0))
    single = kwargs.pop('single_connection_client', False)
    client = Redis(connection_pool=CheckedConnectionPool.from_url(url, **kwargs), single_connection_client=single)
    client.auto_close_connection_pool = True  # as Redis.from_url: closing the client closes its pool
    return client


# MSG_DONTWAIT where the platform has it (the socket is non-blocking anyway under asyncio).
_PEEK = socket.MSG_PEEK | getattr(socket, 'MSG_DONTWAIT', 0)
_OPEN, _CLOSED, _PENDING = 'open', 'closed', 'pending'


def _socket_state(connection: Any) -> str:
    """What the kernel knows of a pooled connection now: closed (or reset) by the server, bytes
    the event loop has not read yet, or open (also: not connected, or not a socket we can see).

    redis-py's pool checks a connection it hands out against what the event loop has read from
    it, so a close that arrived since the loop last polled the socket (a ``CLIENT KILL``, a
    proxy's idle timeout, a restarted server, then a command sent at once) goes unseen and the
    command is written into a dead connection. Peeking at the socket sees the close at once.
    """
    writer = getattr(connection, '_writer', None)
    if writer is None:
        return _OPEN
    transport = writer.transport
    if transport.is_closing():
        return _CLOSED
    raw = transport.get_extra_info('socket')
    if raw is None:
        return _OPEN
    try:
        probe = socket.socket(fileno=raw.fileno())  # a view of the same descriptor, detached below
    except (OSError, ValueError):
        return _OPEN
    try:
        return _CLOSED if probe.recv(1, _PEEK) == b'' else _PENDING
    except (BlockingIOError, InterruptedError):
        return _OPEN  # nothing pending
    except OSError:
        return _CLOSED  # reset by the server
    finally:
        probe.detach()


async def reopen_if_closed(connection: Any) -> None:
    """Replace a pooled connection the server has closed by a new one, before anything is sent
    on it: nothing was written to the dead one, so nothing can run twice.

    Bytes pending on an idle connection are read by the event loop first (a few iterations):
    a TLS server sends its ``close_notify`` before the close itself, and a RESP3 server may have
    pushed a message; what the loop makes of them (closed, or data redis-py handles) decides.
    """
    state = _socket_state(connection)
    for _ in range(3):
        if state != _PENDING:
            break
        await asyncio.sleep(0)
        state = _socket_state(connection)
    if state == _CLOSED:
        await connection.disconnect(nowait=True)
        await connection.connect()


# redis-py before 5.3 requires a command name (and ignores it); later ones deprecate passing one.
_get_connection_name = inspect.signature(ConnectionPool.get_connection).parameters.get('command_name')
_COMMAND_NAME_REQUIRED = _get_connection_name is not None and _get_connection_name.default is inspect.Parameter.empty


class CheckedConnectionPool(ConnectionPool):
    """A connection pool that checks each connection it hands out (:func:`reopen_if_closed`)
    and opens a new one in place of one the server has closed.

    This is what makes a client survive a Redis restart or a killed idle connection without
    retries: a retry cannot tell a command that never reached Redis from one whose reply was
    lost (the enqueue script would push its job id twice), while a connection found closed
    *before* sending carried nothing. A connection that dies after the command was written
    still raises ``ConnectionError``: the caller cannot know whether the command ran.
    """

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        if not args and not kwargs and _COMMAND_NAME_REQUIRED:
            args = (None,)
        connection = await super().get_connection(*args, **kwargs)
        try:
            await reopen_if_closed(connection)
        except BaseException:
            await self.release(connection)
            raise
        return connection


SYNC_CLIENT_PARAMS = set(inspect.signature(redis.Redis.__init__).parameters)
_ASYNC_PARAMS = set(inspect.signature(Redis.__init__).parameters)
# Settings that are objects of one kind of client (async retry policies, parsers, connect
# hooks) and cannot be handed to the other kind; the other kind's defaults apply instead.
_KIND_SPECIFIC = {'retry', 'parser_class', 'redis_connect_func', 'connection_pool', 'event_dispatcher'}
_PLAIN = (str, bytes, int, float, bool, type(None))
# What a pool adds to its connections' arguments itself (back-references, per-pool handlers,
# copies of the timeouts); a new pool makes its own.
_POOL_MADE = {
    'connection_pool',
    'maint_notifications_pool_handler',
    'maint_notifications_config',
    'oss_cluster_maint_notifications_handler',
    'orig_host_address',
    'orig_socket_timeout',
    'orig_socket_connect_timeout',
    'himport_registry',
}


_SECRETS = ('password', 'ssl_password')


def _redacted(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {k: '***' if k in _SECRETS and v else v for k, v in kwargs.items()}


@dataclass(frozen=True, repr=False)
class SentinelTarget:
    """A service behind Redis Sentinel: the sentinels to ask, and what to ask them for."""

    instances: tuple[tuple[str, int], ...]
    service_name: str
    sentinel_kwargs: dict[str, Any] = field(default_factory=dict)
    is_master: bool = True
    min_other_sentinels: int = 0
    force_master_ip: str | None = None

    def __repr__(self) -> str:  # never shows a password
        return (
            f'SentinelTarget({self.service_name!r}, {list(self.instances)!r}, '
            f'sentinel_kwargs={_redacted(self.sentinel_kwargs)!r}, is_master={self.is_master})'
        )


@dataclass(frozen=True, repr=False)
class Endpoint:
    """How a client reaches its server, free of pools and event loops: enough to open another
    client of either kind (blocking or asyncio) with the same address, database, TLS settings,
    ACL user and Sentinel service, in a thread or in a child process.

    ``kwargs`` are client constructor arguments (``host``, ``ssl=True``, ``ssl_ca_certs``, …);
    with ``sentinel`` set they are the arguments of the master's connections.
    """

    kwargs: dict[str, Any]
    sentinel: SentinelTarget | None = None

    def __repr__(self) -> str:  # never shows a password
        return f'Endpoint({_redacted(self.kwargs)!r}, sentinel={self.sentinel!r})'

    def portable(self) -> Endpoint:
        """Only plain values, so the endpoint pickles (``--sync-jobs process`` children)."""
        sentinel = self.sentinel
        if sentinel is not None:
            sentinel = replace(sentinel, sentinel_kwargs=_plain(sentinel.sentinel_kwargs))
        return Endpoint(_plain(self.kwargs), sentinel)

    def sync_client(self) -> redis.Redis:
        """A blocking ``redis.Redis`` (raw bytes, as rq expects)."""
        from redis.sentinel import Sentinel

        return cast(redis.Redis, self._client(redis.Redis, Sentinel, SYNC_CLIENT_PARAMS))

    def async_client(self) -> Redis:
        """A ``redis.asyncio.Redis`` (raw bytes)."""
        from redis.asyncio.sentinel import Sentinel as AsyncSentinel

        return cast(Redis, self._client(Redis, AsyncSentinel, _ASYNC_PARAMS))

    def _client(self, client_class: Any, sentinel_class: Any, params: set[str]) -> Any:
        """A client of ``client_class``, or through ``sentinel_class`` for a Sentinel service."""
        kwargs = _for(params, self.kwargs)
        target = self.sentinel
        if target is None:
            return client_class(**kwargs)
        if target.force_master_ip is not None:
            # Unknown to redis-py's Sentinel before 5.1 (blocking) and 6.0 (asyncio), where it
            # would reach the connections as an argument they refuse.
            if 'force_master_ip' in inspect.signature(sentinel_class.__init__).parameters:
                kwargs['force_master_ip'] = target.force_master_ip
        manager = sentinel_class(
            list(target.instances),
            min_other_sentinels=target.min_other_sentinels,
            sentinel_kwargs=_for(params, target.sentinel_kwargs),
            **kwargs,
        )
        if target.is_master:
            return manager.master_for(target.service_name)
        return manager.slave_for(target.service_name)


def _for(params: set[str], kwargs: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in kwargs.items() if k in params and k not in _KIND_SPECIFIC and k != 'decode_responses'}


def _plain(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in kwargs.items() if isinstance(v, _PLAIN)}


def _own(pool: Any) -> dict[str, Any]:
    return {k: v for k, v in pool.connection_kwargs.items() if k not in _POOL_MADE}


def _client_kwargs(pool: Any) -> dict[str, Any]:
    """A pool's connection settings, spelled as client constructor arguments."""
    kwargs = _own(pool)
    cls = pool.connection_class
    if issubclass(cls, (UnixDomainSocketConnection, redis.UnixDomainSocketConnection)):
        kwargs['unix_socket_path'] = kwargs.pop('path', None)
    if issubclass(cls, (SSLConnection, redis.SSLConnection)):
        kwargs['ssl'] = True
    return kwargs


def endpoint(connection: Redis | redis.Redis) -> Endpoint:
    """The :class:`Endpoint` of a client of either kind (plain, TLS, Unix socket or Sentinel)."""
    pool: Any = connection.connection_pool
    kwargs = _client_kwargs(pool)
    manager = getattr(pool, 'sentinel_manager', None)
    if manager is None:
        return Endpoint(kwargs)
    instances = tuple(
        (s.connection_pool.connection_kwargs['host'], int(s.connection_pool.connection_kwargs['port']))
        for s in manager.sentinels
    )
    target = SentinelTarget(
        instances=instances,
        service_name=pool.service_name,
        sentinel_kwargs=dict(manager.sentinel_kwargs),
        is_master=bool(pool.is_master),
        min_other_sentinels=manager.min_other_sentinels,
        force_master_ip=getattr(manager, '_force_master_ip', None),
    )
    return Endpoint(kwargs, target)


def sync_connection(connection: Redis) -> redis.Redis:
    """A blocking ``redis.Redis`` to the same server, for code that expects rq's sync client
    (callbacks, ``rq.get_current_job()`` inside plain functions, the heartbeat thread); through
    the same Sentinel service when ``connection`` uses one, so it follows a failover."""
    return endpoint(connection).sync_client()


def async_connection(connection: redis.Redis) -> Redis:
    """A ``redis.asyncio.Redis`` to the server a blocking client talks to (used when a
    stock rq worker runs an aiorq coroutine job)."""
    return endpoint(connection).async_client()


def dedicated_client(connection: Redis) -> Redis:
    """A client of its own connection pool with ``connection``'s settings, timeouts included
    (see :func:`blocking_client`): calls on it never wait behind the other client's, so the
    worker's claims and its outcome writes reach Redis side by side. Close it with ``aclose()``."""
    return _pool_copy(connection, blocking=False)


def blocking_client(connection: Redis) -> Redis:
    """A client of a dedicated connection with ``connection``'s settings (server, TLS, ACL
    user, Sentinel service) but no socket timeout, for commands that wait in Redis (``BLMOVE``,
    ``XREAD BLOCK``) longer than the client's ``socket_timeout`` would let a read last.

    A plain pool is rebuilt from its connection class and arguments, a Sentinel pool on the
    same sentinels, so the connection follows a failover. The client has a private pool rather
    than one held connection: redis-py reconnects a held connection to its last address, which
    after a failover is the old master; a pooled one asks the sentinels again. Used one command
    at a time, the pool keeps a single connection (``CLIENT ID`` then names the connection the
    next command runs on). Close it with ``aclose()``.
    """
    return _pool_copy(connection, blocking=True)


def _pool_copy(connection: Redis, blocking: bool) -> Redis:
    """A client of a new pool like ``connection``'s (``blocking``: without a socket timeout)."""
    pool = connection.connection_pool
    kwargs = _own(pool)
    if blocking:
        # Without a read timeout a connect must still give up: keep the limit the client had
        # (its socket timeout when no connect timeout was given; else the library's default).
        if kwargs.get('socket_connect_timeout') is None:
            kwargs.pop('socket_connect_timeout', None)
            if kwargs.get('socket_timeout') is not None:
                kwargs['socket_connect_timeout'] = kwargs['socket_timeout']
        kwargs['socket_timeout'] = None
    new_pool: ConnectionPool
    if isinstance(pool, SentinelConnectionPool):
        new_pool = SentinelConnectionPool(
            pool.service_name,
            pool.sentinel_manager,
            connection_class=pool.connection_class,
            is_master=pool.is_master,
            check_connection=pool.check_connection,
            **kwargs,
        )
    else:
        new_pool = ConnectionPool(connection_class=pool.connection_class, **kwargs)
    client = Redis(connection_pool=new_pool)
    client.auto_close_connection_pool = True  # closing the client closes its private pool
    return client


def redis_from_config(settings: dict[str, Any], connection_class: type[Redis] = Redis) -> Redis:
    """rq's ``get_redis_from_config`` for asyncio clients: ``REDIS_URL``, else ``SENTINEL``
    (read exactly as rq reads it, with ``redis.asyncio``'s Sentinel), else ``REDIS_HOST`` … ."""
    from rq.cli.helpers import get_redis_from_config

    config = settings.get('SENTINEL')
    if settings.get('REDIS_URL') is not None or config is None:
        return cast(Redis, get_redis_from_config(settings, connection_class))
    from redis.asyncio.sentinel import Sentinel as AsyncSentinel

    connection_kwargs = {
        'db': config.get('DB', 0),
        'username': config.get('USERNAME', None),
        'password': config.get('PASSWORD', None),
        'socket_timeout': config.get('SOCKET_TIMEOUT', None),
        'ssl': config.get('SSL', False),
        **config.get('CONNECTION_KWARGS', {}),
    }
    manager = AsyncSentinel(
        config.get('INSTANCES', [('localhost', 26379)]),
        sentinel_kwargs=config.get('SENTINEL_KWARGS', {}),
        **connection_kwargs,
    )
    return cast(Redis, manager.master_for(config.get('MASTER_NAME', 'mymaster'), redis_class=connection_class))
