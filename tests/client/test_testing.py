"""``aiorq.testing``: queued jobs run on the test's own loop leave what a real worker process leaves."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from typing import Any

import pytest
import redis
import rq
import tasks
from conftest import RQ_DB
from redis.asyncio import Redis
from redis_server import RedisServer
from rq.job import Job as RQJob
from state import WORKER_KEYS, diff, snapshot

import aiorq
from aiorq import JobStatus, Queue
from aiorq.testing import run_queued, worker_running
from aiorq_worker import SuspendedError

IGNORE = WORKER_KEYS
QUEUES = ['q', 'other']


def enqueue_cases(conn: redis.Redis) -> list[str]:
    """The same jobs, with fixed ids, on both sides (stock rq enqueues: only the runs differ)."""
    q = rq.Queue('q', connection=conn)
    q.enqueue(tasks.add, 1, 2, job_id='plain')
    q.enqueue(tasks.async_add, 3, 4, job_id='coro')
    q.enqueue(tasks.stock_progress, 5, job_id='meta')
    q.enqueue(tasks.fail, 'bad', job_id='bad')
    q.enqueue(tasks.fail, 'again', job_id='retried', retry=rq.Retry(max=1))
    q.enqueue(tasks.add, 5, 6, job_id='child', depends_on='plain')
    q.enqueue(tasks.add, 7, 8, job_id='strict', depends_on='bad')
    rq.Queue('other', connection=conn).enqueue(tasks.add, 1, 1, job_id='elsewhere', depends_on='coro')
    return ['plain', 'coro', 'meta', 'bad', 'retried', 'child', 'strict', 'elsewhere']


def run_process(url: str, worker: str) -> None:
    if worker == 'rq':
        cmd = [sys.executable, '-m', 'rq.cli', 'worker', '-w', 'rq.worker.SimpleWorker']
    else:
        cmd = [sys.executable, '-m', 'aiorq_worker', 'worker']
    cmd += ['--burst', '--name', 'w', '--logging_level', 'WARNING', '--url', url, *QUEUES]
    done = subprocess.run(cmd, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()


@pytest.mark.parametrize('worker', ['rq', 'aiorq'])
async def test_run_queued_leaves_what_a_worker_process_leaves(
    worker: str, rq_conn: redis.Redis, aiorq_sync: redis.Redis, aconn: Redis, redis_server: RedisServer
) -> None:
    ids = enqueue_cases(rq_conn)
    enqueue_cases(aiorq_sync)
    run_process(redis_server.url(RQ_DB), worker)
    ran = await run_queued(QUEUES, aconn, name='w')
    # plain, coro, meta, child, elsewhere; bad and retried (twice) failed; strict never ran.
    assert (ran.succeeded, ran.failed) == (5, 3)
    before = {k: v for k, v in snapshot(rq_conn).items() if not k.startswith(IGNORE)}
    after = {k: v for k, v in snapshot(aiorq_sync).items() if not k.startswith(IGNORE)}
    problems = diff(before, after)
    assert not problems, f'run_queued left a different state than `{worker} worker`:\n' + '\n'.join(problems)
    for job_id in ids:  # read back with stock rq, as another process would
        reference, ours = RQJob.fetch(job_id, connection=rq_conn), RQJob.fetch(job_id, connection=aiorq_sync)
        assert ours.get_status() == reference.get_status(), job_id
        assert ours.return_value() == reference.return_value(), job_id
    assert RQJob.fetch('child', connection=aiorq_sync).return_value() == 11
    assert RQJob.fetch('elsewhere', connection=aiorq_sync).return_value() == 2
    assert RQJob.fetch('strict', connection=aiorq_sync).get_status() == 'deferred'
    for name in ('StartedJobRegistry', 'FinishedJobRegistry', 'FailedJobRegistry', 'DeferredJobRegistry'):
        for queue in QUEUES:
            registry: Any = getattr(rq.registry, name)
            assert sorted(registry(queue, connection=aiorq_sync).get_job_ids()) == sorted(
                registry(queue, connection=rq_conn).get_job_ids()
            ), (name, queue)


async def test_failure_recorded(conn: Redis) -> None:
    q = Queue('q', connection=conn)
    bad = await q.enqueue(tasks.async_fail)
    ok = await q.enqueue(tasks.add, 2, 2)
    ran = await run_queued(q)
    assert (ran.succeeded, ran.failed, ran.total) == (1, 1, 2)
    assert await bad.get_status() == JobStatus.FAILED
    assert await q.failed_job_registry.get_job_ids() == [bad.id]
    result = await bad.latest_result()
    assert result is not None and result.type == aiorq.Result.Type.FAILED
    assert "KeyError: 'async boom'" in (result.exc_string or '')
    assert await ok.result == 4


async def test_dependents_released_onto_listed_queues_only(conn: Redis) -> None:
    q, other = Queue('q', connection=conn), Queue('other', connection=conn)
    parent = await q.enqueue(tasks.add, 1, 2)
    same = await q.enqueue(tasks.add, 3, 4, depends_on=parent)
    grandchild = await q.enqueue(tasks.add, 5, 6, depends_on=same)
    elsewhere = await other.enqueue(tasks.add, 7, 8, depends_on=parent)
    ran = await run_queued(q)
    assert ran.succeeded == 3
    assert [await same.result, await grandchild.result] == [7, 11]
    # Released onto a queue this call did not serve: queued there, not run.
    assert await elsewhere.get_status() == JobStatus.QUEUED
    assert await other.job_ids == [elsewhere.id]
    assert (await run_queued(other)).succeeded == 1
    assert await elsewhere.result == 15


async def test_nothing_queued(conn: Redis) -> None:
    ran = await run_queued('q', conn)
    assert ran.total == 0
    assert await aiorq.count_workers(conn) == 0


async def test_worker_running(conn: Redis, sync_conn: redis.Redis) -> None:
    q = Queue('q', connection=conn)
    handlers = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
    greeted: list[str] = []

    async def startup(worker: Any) -> None:
        worker.state.greeting = 'hello'
        greeted.append(worker.name)

    async with worker_running(q, name='inproc', on_startup=startup) as worker:
        assert greeted == ['inproc']  # entered once the hooks ran
        assert [w.name for w in rq.Worker.all(connection=sync_conn)] == ['inproc']
        assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers
        job = await q.enqueue(tasks.async_add, 1, 2)
        assert await job.latest_result(timeout=5) is not None
        assert await job.result == 3
        stateful = await q.enqueue(tasks.uses_worker_state)
        assert await stateful.latest_result(timeout=5) is not None
        assert await stateful.result == 'hello'
        slow = await q.enqueue(tasks.async_sleep_for, 0.5)
        while await slow.get_status() != JobStatus.STARTED:
            await asyncio.sleep(0.01)
    # A warm shutdown: the running job finished, the worker is gone.
    assert await slow.result == 0.5
    assert worker.successful_job_count == 3
    assert rq.Worker.all(connection=sync_conn) == []
    assert sync_conn.hget('rq:worker:inproc', 'death')
    assert aiorq.get_current_job() is None  # the jobs' context stayed in their tasks


async def test_worker_running_stop_timeout_cancels(conn: Redis) -> None:
    q = Queue('q', connection=conn)
    async with worker_running(q, stop_timeout=0.3):
        job = await q.enqueue(tasks.async_sleep_for, 30)
        while await job.get_status() != JobStatus.STARTED:
            await asyncio.sleep(0.01)
        started = time.monotonic()
    assert time.monotonic() - started < 5
    assert await job.get_status() == JobStatus.FAILED
    result = await job.latest_result()
    assert result is not None and 'cold shutdown' in (result.exc_string or '')


async def test_worker_running_cannot_start_while_suspended(conn: Redis) -> None:
    await aiorq.suspend(conn)
    with pytest.raises(SuspendedError):
        async with worker_running('q', conn):
            pytest.fail('entered a suspended worker')


def test_import_aiorq_does_not_import_the_worker() -> None:
    code = "import sys, aiorq; assert 'aiorq_worker' not in sys.modules; import aiorq.testing"
    subprocess.run([sys.executable, '-c', code], check=True, timeout=30)
