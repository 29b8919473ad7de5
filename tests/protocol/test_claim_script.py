"""The claim (pop and start in one script, ``dequeue.CLAIM_SCRIPT``) tested directly against Redis:
repeated with the same execution ids after a lost reply it reports what the first call started
and pops nothing more; and it never starts a job with a start time earlier than its enqueue time
(a dependent released while the claim was on its way waits for the next claim)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import redis
import tasks
from redis.asyncio import Redis
from rq.utils import now, utcformat

import aiorq
from aiorq.protocol import dequeue
from aiorq_worker import Worker

WORKER = 'claimer'


async def claim(conn: Redis, exec_ids: list[str], want: int, waiting: bool = False) -> list[dequeue.Claimed]:
    """Claim; ``waiting``: whether a job enqueued after the claim's clock reading is left."""
    executions, broken, _, left = await dequeue.claim_executions(
        conn, WORKER, ['q'], exec_ids, want=want, interval=30, single=True
    )
    assert not broken
    assert left == waiting
    return executions


async def test_a_repeated_claim_reports_the_first_and_pops_nothing(conn: Redis, sync_conn: redis.Redis) -> None:
    q = aiorq.Queue('q', connection=conn)
    ids = [(await q.enqueue(tasks.add, i, 1)).id for i in range(3)]
    exec_ids = dequeue.new_execution_ids(2)
    first = await claim(conn, exec_ids, 2)
    again = await claim(conn, exec_ids, 2)
    assert [(ex.job_id, ex.id) for ex in first] == list(zip(ids[:2], exec_ids))
    assert sorted((ex.job_id, ex.id, ex.created_at, ex.started_at) for ex in again) == sorted(
        (ex.job_id, ex.id, ex.created_at, ex.started_at) for ex in first
    )
    assert sync_conn.lrange('rq:queue:q', 0, -1) == [ids[2].encode()]
    assert sync_conn.scard(f'rq:worker:{WORKER}:executions') == 2
    assert sync_conn.zcard('rq:wip:q') == 2
    # A fresh claim (new ids) takes the next job.
    assert [ex.job_id for ex in await claim(conn, dequeue.new_execution_ids(2), 2)] == [ids[2]]


async def test_a_claim_never_starts_a_job_enqueued_after_its_start_time(conn: Redis, sync_conn: redis.Redis) -> None:
    q = aiorq.Queue('q', connection=conn)
    early = await q.enqueue(tasks.add, 1, 1)
    late = await q.enqueue(tasks.add, 2, 2)
    # As if ``late`` had been enqueued (a dependent released, say) after the claim read its clock.
    sync_conn.hset(f'rq:job:{late.id}', 'enqueued_at', utcformat(now() + timedelta(seconds=5)))
    taken = await claim(conn, dequeue.new_execution_ids(2), 2, waiting=True)
    assert [ex.job_id for ex in taken] == [early.id]
    assert sync_conn.lrange('rq:queue:q', 0, -1) == [late.id.encode()]
    assert sync_conn.hget(f'rq:job:{late.id}', 'status') == b'queued'
    # Once its enqueue time has passed, it is taken like any other.
    sync_conn.hset(f'rq:job:{late.id}', 'enqueued_at', utcformat(now() - timedelta(seconds=1)))
    assert [ex.job_id for ex in await claim(conn, dequeue.new_execution_ids(1), 1)] == [late.id]
    started = sync_conn.hget(f'rq:job:{late.id}', 'started_at')
    assert started is not None and started >= sync_conn.hget(f'rq:job:{late.id}', 'enqueued_at')


async def test_a_burst_worker_runs_a_job_its_claim_left(conn: Redis, sync_conn: redis.Redis) -> None:
    """A producer whose clock runs ahead (or a dependent released in the race above): the claim
    leaves the job, the worker takes it through its pop instead, and burst mode does not end
    before it ran."""
    job = await aiorq.Queue('q', connection=conn).enqueue(tasks.add, 2, 3)
    sync_conn.hset(f'rq:job:{job.id}', 'enqueued_at', utcformat(now() + timedelta(seconds=30)))
    await asyncio.wait_for(Worker('q', connection=conn, name='burster').work(burst=True), 20)
    assert await job.result == 5
