"""On big data the pages stay small: the Redis commands a page runs are bounded by its page size
(and by the number of queues and workers), never by how many jobs a registry holds. Counted by
Redis itself (``INFO commandstats``, which counts the commands a script runs too); not timed."""

from __future__ import annotations

import time
from typing import Any

import httpx
import redis
import tasks
from redis.asyncio import Redis
from webkit import client, fill_failed

from aiorq import Queue

BIG = 20_000
QUEUES = 50
PAGE = 50


# Not the page's: the counting itself, and the set-up of a new pooled connection (HELLO, CLIENT
# SETINFO: redis-py opens one when a page's script and pipeline overlap, whenever it needs one).
NOT_COUNTED = ('cmdstat_info', 'cmdstat_config', 'cmdstat_hello', 'cmdstat_client')


def commands_run(sync: redis.Redis) -> int:
    stats: dict[str, Any] = sync.info('commandstats')
    return sum(v['calls'] for k, v in stats.items() if not k.startswith(NOT_COUNTED))


async def count(c: httpx.AsyncClient, sync: redis.Redis, path: str) -> tuple[int, float]:
    """The commands one view of ``path`` runs in Redis, and how long the app took."""
    assert (await c.get(path)).status_code == 200  # warm: scripts loaded, connection open
    sync.config_resetstat()
    start = time.perf_counter()
    response = await c.get(path)
    elapsed = time.perf_counter() - start
    assert response.status_code == 200, response.text[-2000:]
    return commands_run(sync), elapsed


async def test_commands_per_page_bounded_by_page_size(conn: Redis, sync_conn: redis.Redis) -> None:
    await fill_failed(conn, sync_conn, 'big', BIG)
    await fill_failed(conn, sync_conn, 'small', PAGE + 10)
    for i in range(QUEUES - 2):
        await Queue(f'queue-{i:02d}', connection=conn).enqueue(tasks.add, i, i)
    assert sync_conn.zcard('rq:failed:big') == BIG
    async with client(conn) as c:
        big, t_big = await count(c, sync_conn, f'/queues/big?registry=failed&per_page={PAGE}')
        deep, t_deep = await count(c, sync_conn, f'/queues/big?registry=failed&per_page={PAGE}&page={BIG // PAGE}')
        small, _ = await count(c, sync_conn, f'/queues/small?registry=failed&per_page={PAGE}')
        tiny, _ = await count(c, sync_conn, '/queues/big?registry=failed&per_page=5')
        # A page of 50 costs what a page of 50 costs, whatever the registry holds.
        assert big == deep == small, (big, deep, small)
        assert big <= PAGE + 15 and tiny <= 5 + 15, (big, tiny)
        job, t_job = await count(c, sync_conn, '/jobs/big-000123')
        assert job <= 40, job
        # Only a queued job has a position: a failed one costs no scan of its queue (LPOS).
        assert 'cmdstat_lpos' not in sync_conn.info('commandstats')
        overview, t_overview = await count(c, sync_conn, '/')
        live, _ = await count(c, sync_conn, '/api/live')
        # Per queue: its list and seven registries; then the workers (none here), the history.
        assert overview == live <= 8 * QUEUES + 70, overview
        print(
            f'\ncommands: failed page {big}, page of 5 {tiny}, job {job}, overview {overview}; '
            f'app time: page 1 {t_big * 1000:.1f} ms, page {BIG // PAGE} {t_deep * 1000:.1f} ms, '
            f'job {t_job * 1000:.1f} ms, overview {t_overview * 1000:.1f} ms'
        )
