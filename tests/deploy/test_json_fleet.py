"""The JSON serializer end to end in a mixed fleet: aiorq enqueues with ``JSONSerializer``; a stock
``rq worker -S rq.serializers.JSONSerializer`` and an ``aiorq worker -S …`` run the jobs, first
each alone (so each is seen running every kind of job), then side by side; aiorq reads every
result back. No pickle is written: the jobs' data are JSON."""

from __future__ import annotations

import json
import subprocess
import zlib

import deploy_tasks
import redis
from deploy_servers import HERE, aiorq_worker, rq_worker, wait_blocked, worker_env
from processes import Processes
from redis.asyncio import Redis
from rq.serializers import JSONSerializer

from aiorq import Job, JobStatus, Queue

SERIALIZER = 'rq.serializers.JSONSerializer'


async def enqueue_batch(q: Queue, base: int) -> list[Job]:
    first = await q.enqueue(deploy_tasks.add, base, 1)
    return [
        first,
        await q.enqueue(deploy_tasks.async_add, base, 2),
        await q.enqueue(deploy_tasks.describe, {'a': base, 'b': 1}),
        await q.enqueue(deploy_tasks.add, base, 3, depends_on=first),
        await q.enqueue(deploy_tasks.fail, f'failure {base}'),
    ]


async def check_batch(jobs: list[Job], base: int, worker_name: str | None, sync: redis.Redis) -> None:
    for job in jobs:
        assert await job.latest_result(timeout=20) is not None, job.id
    values = [await j.return_value() for j in jobs[:4]]
    assert values == [base + 1, base + 2, {'keys': ['a', 'b'], 'total': base + 1}, base + 3]
    assert [await j.get_status() for j in jobs] == [JobStatus.FINISHED] * 4 + [JobStatus.FAILED]
    failure = await jobs[4].latest_result()
    assert failure is not None and f'ValueError: failure {base}' in (failure.exc_string or '')
    for job in jobs:
        raw = sync.hget(f'rq:job:{job.id}', 'data')
        assert raw is not None
        json.loads(zlib.decompress(raw))  # JSON, not pickle
        if worker_name is not None:
            assert sync.hget(f'rq:job:{job.id}', 'worker_name') == worker_name.encode()


def burst(args: list[str]) -> None:
    done = subprocess.run(args, env=worker_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


async def test_json_serializer_mixed_fleet(
    redis_url: str, conn: Redis, sync_conn: redis.Redis, processes: Processes
) -> None:
    q = Queue('json', connection=conn, serializer=JSONSerializer)
    common = ['--url', redis_url, '--path', str(HERE), '-S', SERIALIZER]

    stock_jobs = await enqueue_batch(q, 10)
    burst(rq_worker(*common, '--burst', '-n', 'json-stock-alone', 'json'))
    await check_batch(stock_jobs, 10, 'json-stock-alone', sync_conn)

    aiorq_jobs = await enqueue_batch(q, 20)
    burst(aiorq_worker(*common, '--burst', '-n', 'json-aiorq-alone', 'json'))
    await check_batch(aiorq_jobs, 20, 'json-aiorq-alone', sync_conn)

    # Side by side on one queue.
    processes.start('rq', rq_worker(*common, '-n', 'json-stock', 'json'))
    processes.start('aiorq', aiorq_worker(*common, '-n', 'json-aiorq', 'json'))
    # Both blocked in their pops before the jobs arrive: Redis hands the first ids to the
    # blocked clients in turn, so each worker gets some.
    assert await wait_blocked(sync_conn, 2, 20), processes.logs()
    batches = [await enqueue_batch(q, base) for base in (30, 40, 50, 60)]
    for base, jobs in zip((30, 40, 50, 60), batches):
        await check_batch(jobs, base, None, sync_conn)
    ran_on = {sync_conn.hget(f'rq:job:{j.id}', 'worker_name') for jobs in batches for j in jobs}
    assert ran_on == {b'json-stock', b'json-aiorq'}, ran_on
