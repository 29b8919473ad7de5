"""Connections: any ``redis.asyncio.Redis``, plus the seed's connection stack.

rq 3.0 has no implicit connections; aiorq keeps ``push_connection``/``pop_connection``/
``get_current_connection`` from its 2016 API. The stack lives in a ContextVar holding an
immutable tuple, so a task sees what was pushed before it was created and never a sibling's
pushes.
"""

from __future__ import annotations

import inspect
import os
from contextvars import ContextVar
from typing import Any

import redis
from redis.asyncio import Redis
from redis.asyncio.connection import SSLConnection, UnixDomainSocketConnection
from redis.backoff import NoBackoff
from redis.retry import Retry
from rq.connections import NoRedisConnectionException

__all__ = [
    'NoRedisConnectionException',
    'push_connection',
    'pop_connection',
    'get_current_connection',
    'resolve_connection',
    'from_url',
    'url_from_env',
    'sync_connection',
]

_stack: ContextVar[tuple[Redis, ...]] = ContextVar('aiorq_connection_stack', default=())

# A client aiorq creates itself gives up quickly on an unreachable server.
CONNECT_TIMEOUT = 1.0


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
    """A raw-bytes async client that fails fast when the server cannot be reached."""
    kwargs.setdefault('socket_connect_timeout', CONNECT_TIMEOUT)
    kwargs.setdefault('retry', Retry(NoBackoff(), 0))
    return Redis.from_url(url, **kwargs)


SYNC_CLIENT_PARAMS = set(inspect.signature(redis.Redis.__init__).parameters)


def sync_connection(connection: Redis) -> redis.Redis:
    """A blocking ``redis.Redis`` to the same server, for code that expects rq's sync client
    (callbacks, ``rq.get_current_job()`` inside plain functions)."""
    pool = connection.connection_pool
    kwargs = dict(pool.connection_kwargs)
    if issubclass(pool.connection_class, UnixDomainSocketConnection):
        kwargs['unix_socket_path'] = kwargs.pop('path', None)
    if issubclass(pool.connection_class, SSLConnection):
        kwargs['ssl'] = True
        for key in list(kwargs):
            if key.startswith('ssl_') and key not in SYNC_CLIENT_PARAMS:
                kwargs.pop(key)
    kwargs.pop('decode_responses', None)
    kwargs.pop('retry', None)
    return redis.Redis(**{k: v for k, v in kwargs.items() if k in SYNC_CLIENT_PARAMS})


_ASYNC_PARAMS = set(inspect.signature(Redis.__init__).parameters)


def async_connection(connection: redis.Redis) -> Redis:
    """A ``redis.asyncio.Redis`` to the server a blocking client talks to (used when a
    stock rq worker runs an aiorq coroutine job)."""
    pool = connection.connection_pool
    kwargs = dict(pool.connection_kwargs)
    if issubclass(pool.connection_class, redis.UnixDomainSocketConnection):
        kwargs['unix_socket_path'] = kwargs.pop('path', None)
    if issubclass(pool.connection_class, redis.SSLConnection):
        kwargs['ssl'] = True
    kwargs.pop('decode_responses', None)
    kwargs.pop('retry', None)
    return Redis(**{k: v for k, v in kwargs.items() if k in _ASYNC_PARAMS})
