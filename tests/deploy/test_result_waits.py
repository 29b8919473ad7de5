"""``job.latest_result(timeout=...)`` waits as long as asked, whatever the client's socket timeout.

The blocking ``XREAD``'s reply is awaited as long as the wait lasts, on a pooled connection;
before, the client's socket timeout (redis-py's default 5 s, or the user's own) cut the wait
with ``redis.exceptions.TimeoutError``.
"""

from __future__ import annotations

import asyncio
import time

import deploy_tasks
from redis.asyncio import Redis

import aiorq
from aiorq import Job, Queue
from aiorq_worker import Worker


async def test_wait_longer_than_the_socket_timeout(redis_url: str, conn: Redis) -> None:
    port = conn.connection_pool.connection_kwargs['port']
    clients = {
        'Redis.from_url, redis-py default socket timeout (5 s)': Redis.from_url(redis_url),
        'aiorq.from_url': aiorq.from_url(redis_url),
        "user's client, socket_timeout=1": Redis(host='127.0.0.1', port=port, socket_timeout=1),
    }
    queue = Queue('waits', connection=conn)
    jobs = {name: await queue.enqueue(deploy_tasks.add, n, 1) for n, name in enumerate(clients)}
    try:
        # Nothing to find: the wait ends at its own timeout with None, not the socket's error.
        short = clients["user's client, socket_timeout=1"]
        started = time.monotonic()
        assert await (await Job.fetch(jobs['aiorq.from_url'].id, connection=short)).latest_result(timeout=1.6) is None
        assert time.monotonic() - started >= 1.5

        waits = {
            name: asyncio.ensure_future((await Job.fetch(jobs[name].id, connection=client)).latest_result(timeout=15))
            for name, client in clients.items()
        }
        await asyncio.sleep(5.5)  # past every socket timeout above, redis-py's 5 s default included
        assert {name: w.done() and w.exception() for name, w in waits.items()} == dict.fromkeys(clients, False)
        await Worker('waits', connection=conn, name='waits').work(burst=True)
        done = await asyncio.wait_for(asyncio.gather(*waits.values()), 10)
        assert [r.return_value if r is not None else None for r in done] == [1, 2, 3]
        # The waits' connections went back to their pools: more waits open no connection.
        opened = await connections_received(conn)
        for name, client in clients.items():
            for _ in range(3):
                again = await (await Job.fetch(jobs[name].id, connection=client)).latest_result(timeout=2)
                assert again is not None
        assert await connections_received(conn) == opened
    finally:
        for client in clients.values():
            await client.aclose()


async def connections_received(conn: Redis) -> int:
    return int((await conn.info('stats'))['total_connections_received'])
