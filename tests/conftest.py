"""Fixtures: one private redis-server for the session; each test gets clean databases on it."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
import redis
from redis.asyncio import Redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / 'tests'))
sys.path.insert(0, str(ROOT / 'examples'))
os.environ.setdefault('PYTHONPATH', '')
os.environ['PYTHONPATH'] = os.pathsep.join(
    p for p in (str(ROOT / 'tests'), str(ROOT / 'examples'), os.environ['PYTHONPATH']) if p
)

import sitecustomize  # noqa: E402,F401  (what every test subprocess imports at start-up: rq's shutdown)
from faultkit import fault_redis, lossy_proxy  # noqa: E402,F401  (fixtures of tests/faults)
from processes import processes  # noqa: E402,F401  (fixture)
from redis_server import RedisServer  # noqa: E402

RQ_DB = 1  # where stock rq acts in differential tests
AIORQ_DB = 2  # where aiorq acts


@pytest_asyncio.fixture(autouse=True, loop_scope='session')
async def no_leftover_tasks() -> AsyncIterator[None]:
    """Tasks a test started and left running (a worker of a test that failed before stopping it)
    are cancelled after it: the tests share one event loop, and a stray worker serving the next
    test's queues would fail that test too."""
    before = asyncio.all_tasks()
    yield
    current = asyncio.current_task()
    left = [t for t in asyncio.all_tasks() - before if t is not current and not t.done()]
    for task in left:
        task.cancel()
    if left:
        await asyncio.wait(left, timeout=10)


@pytest.fixture(scope='session')
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url(0)


@pytest.fixture
def sync_conn(redis_server: RedisServer) -> Iterator[redis.Redis]:
    conn = redis.Redis.from_url(redis_server.url(0))
    conn.flushdb()
    yield conn
    conn.close()


@pytest.fixture
async def conn(redis_server: RedisServer, sync_conn: redis.Redis) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url(0))
    yield client
    await client.aclose()


@pytest.fixture
def rq_conn(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """Stock rq's side of a differential test."""
    conn = redis.Redis.from_url(redis_server.url(RQ_DB))
    conn.flushdb()
    yield conn
    conn.close()


@pytest.fixture
def aiorq_sync(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A blocking view of aiorq's database, for snapshots and for reading back with rq."""
    conn = redis.Redis.from_url(redis_server.url(AIORQ_DB))
    conn.flushdb()
    yield conn
    conn.close()


@pytest.fixture
async def aconn(redis_server: RedisServer, aiorq_sync: redis.Redis) -> AsyncIterator[Redis]:
    """aiorq's side of a differential test."""
    client = Redis.from_url(redis_server.url(AIORQ_DB))
    yield client
    await client.aclose()
