"""Dropped Redis connections: the worker backs off, reconnects, keeps outcomes until written."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis
import rq.command
import tasks
from redis.asyncio import Redis

from aiorq import JobStatus, Queue
from aiorq_worker import Worker


async def test_worker_survives_killed_connections(conn: Redis, sync_conn: redis.Redis) -> None:
    q = Queue('q', connection=conn)
    jobs = [await q.enqueue(tasks.async_sleep_for, 0.2) for _ in range(20)]
    worker = Worker('q', connection=conn, name='resilient', concurrency=4, job_monitoring_interval=1)
    task = asyncio.ensure_future(worker.work())
    deadline = time.monotonic() + 60
    kills = 0
    # Cut every client connection (the worker's blocking pop, pub/sub, heartbeat thread and
    # outcome writes included) a few times while jobs are running.
    while time.monotonic() < deadline and kills < 4:
        await asyncio.sleep(0.3)
        admin = redis.Redis(connection_pool=sync_conn.connection_pool)
        admin.client_kill_filter(_type='normal', skipme=True)
        kills += 1
    while time.monotonic() < deadline:
        statuses = [sync_conn.hget(f'rq:job:{j.id}', 'status') for j in jobs]
        if all(s == b'finished' for s in statuses):
            break
        await asyncio.sleep(0.2)
    # The worker is still registered and serving: a new job runs.
    late = await q.enqueue(tasks.add, 20, 22)
    assert await late.latest_result(timeout=20) is not None
    assert await late.result == 42
    # Commands still arrive: the pub/sub subscription was re-established.
    rq.command.send_shutdown_command(sync_conn, 'resilient')
    await asyncio.wait_for(task, 20)
    assert [await j.get_status() for j in jobs] == [JobStatus.FINISHED] * 20
    assert sync_conn.zcard('rq:wip:q') == 0
    assert sync_conn.llen('rq:queue:q:intermediate') == 0
    assert int(sync_conn.hget('rq:worker:resilient', 'successful_job_count')) == 21


async def test_commands_reach_a_worker_whose_client_has_a_short_socket_timeout(
    redis_url: str, sync_conn: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """An idle subscription outlives the client's socket timeout: before redis-py 8.1 a read
    with no limit of its own was cut by it, and the listener dropped and renewed its
    subscription every time, losing the commands published in between."""
    client = Redis.from_url(redis_url, socket_timeout=0.5)
    worker = Worker('q', connection=client, name='patient-listener')
    task = asyncio.ensure_future(worker.work())
    try:
        await asyncio.wait_for(worker_registered(sync_conn, 'patient-listener'), 10)
        await asyncio.sleep(2)  # four socket timeouts
        rq.command.send_shutdown_command(sync_conn, 'patient-listener')
        await asyncio.wait_for(task, 10)
    finally:
        await client.aclose()
    assert 'pubsub connection lost' not in caplog.text


async def worker_registered(sync_conn: redis.Redis, name: str) -> None:
    while sync_conn.hget(f'rq:worker:{name}', 'state') is None:
        await asyncio.sleep(0.05)
