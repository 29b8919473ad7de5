"""A Redis whose ``maxmemory-policy`` may evict keys can drop job hashes and queue lists when
memory runs short; the worker says so once at start. It reads the policy from ``INFO memory``
(ACL users and managed Redis services that refuse ``CONFIG`` usually allow it); a Redis that
refuses ``INFO`` too gets no warning and still runs the worker."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import redis
import tasks
from redis.asyncio import Redis
from redis_server import RedisServer

from aiorq import JobStatus, Queue
from aiorq_worker import Worker

WARNING = 'jobs can be evicted; set maxmemory-policy noeviction'


@pytest.fixture
def server() -> Iterator[RedisServer]:
    """A Redis of this test's own: its configuration is changed."""
    s = RedisServer()
    yield s
    s.stop()


async def run_one_job(url: str) -> None:
    conn = Redis.from_url(url)
    try:
        q = Queue('q', connection=conn)
        job = await q.enqueue(tasks.add, 1, 2)
        await Worker('q', connection=conn, name='evict').work(burst=True)
        assert await job.get_status() == JobStatus.FINISHED
    finally:
        await conn.aclose()


async def test_warns_once_when_redis_may_evict_jobs(server: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    admin = redis.Redis.from_url(server.url(0))
    try:
        admin.config_set('maxmemory-policy', 'allkeys-lru')
        with caplog.at_level(logging.DEBUG):
            await run_one_job(server.url(0))
        warned = [r for r in caplog.records if WARNING in r.getMessage()]
        assert len(warned) == 1 and warned[0].levelno == logging.WARNING, caplog.text
        assert warned[0].getMessage() == f'Redis maxmemory-policy is allkeys-lru: {WARNING}'

        caplog.clear()
        admin.config_set('maxmemory-policy', 'noeviction')
        with caplog.at_level(logging.DEBUG):
            await run_one_job(server.url(0))
        assert WARNING not in caplog.text and 'maxmemory-policy' not in caplog.text

        # A user refused CONFIG is still warned; one refused INFO is not, and its worker runs.
        admin.config_set('maxmemory-policy', 'volatile-lru')
        for refused in ('config', 'info'):
            admin.acl_setuser(
                refused, enabled=True, passwords=['+pw'], keys=['*'], channels=['*'], commands=['+@all', f'-{refused}']
            )
            caplog.clear()
            with caplog.at_level(logging.DEBUG):
                await run_one_job(f'redis://{refused}:pw@127.0.0.1:{server.port}/0')
            if refused == 'config':
                assert f'Redis maxmemory-policy is volatile-lru: {WARNING}' in caplog.text
            else:
                assert WARNING not in caplog.text
                assert 'maxmemory-policy unknown: INFO memory refused' in caplog.text
    finally:
        admin.close()
