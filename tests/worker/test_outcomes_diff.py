"""The same jobs run by stock rq's SimpleWorker and by aiorq's worker: identical Redis state."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
import redis
import rq
import tasks
from conftest import RQ_DB
from redis.asyncio import Redis
from state import WORKER_KEYS, diff, snapshot

from aiorq_worker import Worker

IGNORE = WORKER_KEYS

CASES: dict[str, Any] = {}


def case(fn: Any) -> Any:
    CASES[fn.__name__] = fn
    return fn


@case
def success(q: rq.Queue) -> None:
    q.enqueue(tasks.add, 1, 2, job_id='plain')
    q.enqueue(tasks.async_add, 3, 4, job_id='coro')
    q.enqueue(tasks.returns_none, job_id='none')
    q.enqueue(tasks.add, 1, 1, job_id='forever', result_ttl=-1)
    q.enqueue(tasks.add, 1, 1, job_id='gone', result_ttl=0)
    q.enqueue(tasks.add, 2, 2, job_id='short', result_ttl=20, ttl=50)
    q.enqueue(tasks.stock_progress, 5, job_id='meta', meta={'progress': 0})


@case
def failure(q: rq.Queue) -> None:
    q.enqueue(tasks.fail, 'bad', job_id='bad')
    q.enqueue(tasks.fail, 'kept', job_id='kept', failure_ttl=100)
    q.enqueue(tasks.fail, 'forever', job_id='forever', failure_ttl=-1)


@case
def retries(q: rq.Queue) -> None:
    q.enqueue(tasks.fail, 'again', job_id='now', retry=rq.Retry(max=2))
    q.enqueue(tasks.fail, 'later', job_id='later', retry=rq.Retry(max=2, interval=[100, 200]))
    q.enqueue(tasks.fail, 'front', job_id='front', retry=rq.Retry(max=1, enqueue_at_front=True))
    q.enqueue(tasks.returns_retry, job_id='returned')


@case
def repeats(q: rq.Queue) -> None:
    q.enqueue(tasks.add, 1, 2, job_id='twice', repeat=rq.Repeat(times=1))
    q.enqueue(tasks.add, 1, 2, job_id='later', repeat=rq.Repeat(times=2, interval=[100, 60]))


@case
def dependencies(q: rq.Queue) -> None:
    q.enqueue(tasks.add, 1, 2, job_id='parent')
    q.enqueue(tasks.add, 3, 4, job_id='child', depends_on='parent')
    q.enqueue(tasks.fail, 'x', job_id='bad_parent')
    q.enqueue(tasks.add, 5, 6, job_id='tolerant', depends_on=rq.job.Dependency(['bad_parent'], allow_failure=True))
    q.enqueue(tasks.add, 7, 8, job_id='strict', depends_on='bad_parent')
    rq.Queue('other', connection=q.connection).enqueue(tasks.add, 1, 1, job_id='elsewhere', depends_on='parent')


@case
def callbacks(q: rq.Queue) -> None:
    q.enqueue(tasks.add, 1, 2, job_id='ok', on_success=tasks.record_success, on_failure=tasks.record_failure)
    q.enqueue(tasks.fail, 'no', job_id='ko', on_success=tasks.record_success, on_failure=tasks.record_failure)
    q.enqueue(tasks.add, 1, 2, job_id='cb_fails', on_success=tasks.fail)


@case
def current_job(q: rq.Queue) -> None:
    """rq's job as jobs see it (``rq.get_current_job()``), built on demand by aiorq's worker."""
    q.enqueue(tasks.current_rq_job, job_id='plain_current', meta={'k': 'v'})
    q.enqueue(tasks.async_current_rq_job, job_id='async_current', meta={'n': [1, 2]})
    q.enqueue(tasks.stock_progress, 3, job_id='progress', meta={'progress': 0}, failure_ttl=0)


@case
def irregular(q: rq.Queue) -> None:
    """Hashes the lean codec cannot be sure of (rq's save rewrites a field): rq's path."""
    q.enqueue(tasks.add, 1, 2, job_id='padded', result_ttl=500)
    q.connection.hset(rq.job.Job.key_for('padded'), 'result_ttl', '0500')
    q.enqueue(tasks.fail, 'x', job_id='old_date', failure_ttl=600)
    q.connection.hset(rq.job.Job.key_for('old_date'), 'created_at', '2026-01-02T03:04:05Z')


@case
def bad_input(q: rq.Queue) -> None:
    q.enqueue('tasks.does_not_exist', job_id='unimportable')
    q.enqueue('no_such_module.func', job_id='no_module')
    q.enqueue(tasks.unpicklable_result, job_id='unpicklable')
    q.enqueue(tasks.add, 1, 2, job_id='vanished')
    q.connection.delete(rq.job.Job.key_for('vanished'))


def run_stock(url: str, queues: list[str]) -> None:
    """rq's SimpleWorker in its own process (it runs coroutines with ``asyncio.run``)."""
    cmd = [sys.executable, '-m', 'rq.cli', 'worker', '--burst', '-w', 'rq.worker.SimpleWorker', '--name', 'w']
    done = subprocess.run([*cmd, '--logging_level', 'WARNING', '--url', url, *queues], capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()


@pytest.mark.parametrize('name', sorted(CASES))
async def test_worker_outcomes_match_stock_rq(
    name: str, rq_conn: redis.Redis, aiorq_sync: redis.Redis, aconn: Redis, redis_server: Any
) -> None:
    for conn in (rq_conn, aiorq_sync):
        CASES[name](rq.Queue('q', connection=conn))
    run_stock(redis_server.url(RQ_DB), ['q', 'other'])
    worker = Worker(['q', 'other'], connection=aconn, name='w', concurrency=4)
    await worker.work(burst=True)
    before = {k: v for k, v in snapshot(rq_conn).items() if not k.startswith(IGNORE)}
    after = {k: v for k, v in snapshot(aiorq_sync).items() if not k.startswith(IGNORE)}
    problems = diff(before, after)
    assert not problems, 'aiorq worker left a different state than rq:\n' + '\n'.join(problems)
    assert before
    rq_worker = rq_conn.hgetall('rq:worker:w')
    aiorq_worker = aiorq_sync.hgetall('rq:worker:w')
    assert set(rq_worker) <= set(aiorq_worker) | {b'current_job'}
    for counter in (b'successful_job_count', b'failed_job_count'):
        assert rq_worker.get(counter) == aiorq_worker.get(counter), counter
