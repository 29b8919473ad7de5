"""aiorq's jobs on real ``rq worker`` processes, and rq's tools reading aiorq's data."""

from __future__ import annotations

import subprocess
import sys

import tasks
from redis.asyncio import Redis

import aiorq
from aiorq import Job, Queue


def rq_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, '-m', 'rq.cli', *args], capture_output=True, text=True, timeout=timeout, check=False
    )


async def test_aiorq_jobs_run_on_stock_worker(conn: Redis, redis_url: str) -> None:
    q = Queue('q', connection=conn)
    plain = await q.enqueue(tasks.add, 1, 2)
    coro = await q.enqueue(tasks.introspect, 7)
    progress = await q.enqueue(tasks.stock_progress, 4)
    failing = await q.enqueue(tasks.fail, 'oops')
    first = await q.enqueue(tasks.add, 2, 3)
    second = await q.enqueue(tasks.add, 4, 5, depends_on=first)
    third = await q.enqueue(tasks.summator, 1, 2, 3, depends_on=aiorq.Dependency([first, second]))
    assert await second.get_status() == aiorq.JobStatus.DEFERRED

    done = rq_cli('worker', '--burst', '--url', redis_url, 'q')
    assert done.returncode == 0, done.stderr

    assert await plain.result == 3
    assert await coro.result == {'id': coro.id, 'origin': 'q', 'meta': {'progress': 7}, 'status': 'started'}
    assert (await Job.fetch(coro.id, connection=conn)).meta == {'progress': 7}
    assert await progress.result == 8
    assert (await Job.fetch(progress.id, connection=conn)).meta == {'progress': 4}
    assert await failing.is_failed
    assert [await j.result for j in (first, second, third)] == [5, 9, 6]
    assert await q.count == 0
    assert await q.started_job_registry.get_job_ids() == []
    assert sorted(await q.finished_job_registry.get_job_ids()) == sorted(
        j.id for j in (plain, coro, progress, first, second, third)
    )


async def test_rq_info_lists_aiorq_queues(conn: Redis, redis_url: str) -> None:
    for i in range(3):
        await Queue('alpha', connection=conn).enqueue(tasks.add, i, i)
    await Queue('beta', connection=conn).enqueue(tasks.add, 1, 1)
    info = rq_cli('info', '--url', redis_url, '--only-queues')
    assert info.returncode == 0, info.stderr
    lines = {line.split()[0]: line for line in info.stdout.splitlines() if '|' in line}
    assert ' 3, 0 executing, 0 finished, 0 failed' in lines['alpha']
    assert ' 1, 0 executing, 0 finished, 0 failed' in lines['beta']
    assert '2 queues, 4 jobs total' in info.stdout


async def test_rq_requeue_and_empty_on_aiorq_data(conn: Redis, redis_url: str) -> None:
    q = Queue('q', connection=conn)
    job = await q.enqueue(tasks.fail, 'x')
    assert rq_cli('worker', '--burst', '--url', redis_url, 'q').returncode == 0
    assert await q.failed_job_registry.get_job_ids() == [job.id]
    requeued = rq_cli('requeue', '--url', redis_url, '--queue', 'q', '--all')
    assert requeued.returncode == 0, requeued.stderr
    assert await q.job_ids == [job.id]
    assert await job.get_status() == aiorq.JobStatus.QUEUED
    emptied = rq_cli('empty', '--url', redis_url, 'q')
    assert emptied.returncode == 0, emptied.stderr
    assert await q.count == 0
    assert not await Job.exists(job.id, connection=conn)


async def test_coroutine_jobs_on_simple_worker_close_their_client(conn: Redis, redis_url: str) -> None:
    """In one stock process, each coroutine job runs on a fresh loop (``asyncio.run``): the async
    client that ``aiorq.get_current_job()`` made for it is closed with that loop, not leaked."""
    q = Queue('q', connection=conn)
    jobs = [await q.enqueue(tasks.introspect, i) for i in range(3)]
    cmd = [sys.executable, '-W', 'always', '-m', 'rq.cli', 'worker', '--burst', '-w', 'rq.worker.SimpleWorker']
    done = subprocess.run([*cmd, '--url', redis_url, 'q'], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert 'unclosed' not in done.stderr, done.stderr
    assert [(await j.result)['meta'] for j in jobs] == [{'progress': i} for i in range(3)]
