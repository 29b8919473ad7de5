"""An aiorq worker killed with SIGKILL in the middle of its jobs: the jobs are abandoned, and
whoever maintains the queue next (stock ``rq info``, a fresh aiorq worker, a fresh stock worker)
retries those with retries left and fails the others (rq-protocol §4.17, §6.7).

The jobs (``tasks.slow_from_redis``) sleep for ``GET sleep_seconds`` seconds (30 while unset), so
they are still running when the worker dies; a test sets the key to 0 before a recovering worker
runs the re-queued ones.

Time travel: a job is abandoned only once its ``rq:wip:<q>`` score (the heartbeat deadline, at
least 60 s ahead: ``min(timeout, job_monitoring_interval) + 60``) lies in the past. Rather than
wait a minute, the tests rewrite the score of every member of ``rq:wip:<q>`` to ``now - 1`` after
the kill, which is exactly the state Redis would hold 61 s later (nothing else refreshes those
scores once the worker is dead).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
import redis
import rq
import tasks
from processes import Processes
from rq.job import Job as RQJob
from rq.job import JobStatus
from rq.results import Result

QUEUE = 'doomed'
WITH_RETRY = 3
WITHOUT_RETRY = 3


def aiorq_worker(url: str, *options: str) -> list[str]:
    return [sys.executable, '-m', 'aiorq_worker', 'worker', '--url', url, *options, QUEUE]


def kill_mid_job(sync_conn: redis.Redis, redis_url: str, processes: Processes) -> tuple[list[str], list[str]]:
    """Enqueue slow jobs (some with ``Retry(max=1)``), let one aiorq worker start all of them,
    SIGKILL it, then age the started registry. Returns (ids with a retry, ids without)."""
    q = rq.Queue(QUEUE, connection=sync_conn)
    retried = [q.enqueue(tasks.slow_from_redis, retry=rq.Retry(max=1)).id for _ in range(WITH_RETRY)]
    plain = [q.enqueue(tasks.slow_from_redis).id for _ in range(WITHOUT_RETRY)]
    ids = retried + plain
    worker = processes.start('victim', aiorq_worker(redis_url, '--job-monitoring-interval', '1'))
    deadline = time.monotonic() + 20
    while True:
        statuses = [j.get_status(refresh=False) for j in RQJob.fetch_many(ids, connection=sync_conn)]
        if all(s == JobStatus.STARTED for s in statuses) and sync_conn.llen('ran') == len(ids):
            break
        assert worker.poll() is None, processes.log(worker)
        assert time.monotonic() < deadline, f'{statuses}\n{processes.log(worker)}'
        time.sleep(0.05)
    assert sync_conn.zcard(f'rq:wip:{QUEUE}') == len(ids)

    os.kill(worker.pid, signal.SIGKILL)
    assert worker.wait(10) == -signal.SIGKILL

    # The jobs still look started, and their executions are still registered.
    assert {j.get_status(refresh=False) for j in RQJob.fetch_many(ids, connection=sync_conn)} == {JobStatus.STARTED}
    members = sync_conn.zrange(f'rq:wip:{QUEUE}', 0, -1)
    assert sorted(m.decode().split(':')[0] for m in members) == sorted(ids)
    # Time travel (see the module docstring): every heartbeat deadline is now in the past.
    past = int(time.time()) - 1
    sync_conn.zadd(f'rq:wip:{QUEUE}', {m: past for m in members}, xx=True)
    return retried, plain


def assert_abandoned_failures(sync_conn: redis.Redis, plain: list[str]) -> None:
    """The jobs without retries: failed, in the failed registry, with rq's AbandonedJobError Result."""
    failed_registry = rq.Queue(QUEUE, connection=sync_conn).failed_job_registry
    assert sorted(failed_registry.get_job_ids()) == sorted(plain)
    for job in RQJob.fetch_many(plain, connection=sync_conn):
        assert job is not None
        assert job.get_status(refresh=False) == JobStatus.FAILED
        latest = job.latest_result()
        assert latest is not None
        assert latest.type == Result.Type.FAILED
        assert 'AbandonedJobError' in (latest.exc_string or ''), latest.exc_string


def assert_nothing_in_flight(sync_conn: redis.Redis) -> None:
    assert sync_conn.zcard(f'rq:wip:{QUEUE}') == 0
    assert sync_conn.llen(f'rq:queue:{QUEUE}:intermediate') == 0


def test_rq_info_recovers_jobs_of_a_killed_aiorq_worker(
    sync_conn: redis.Redis, redis_url: str, processes: Processes
) -> None:
    retried, plain = kill_mid_job(sync_conn, redis_url, processes)

    info = subprocess.run(
        [sys.executable, '-m', 'rq.cli', 'info', '--url', redis_url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert info.returncode == 0, info.stderr

    # With a retry left: back on the queue, the retry spent.
    assert sorted(x.decode() for x in sync_conn.lrange(f'rq:queue:{QUEUE}', 0, -1)) == sorted(retried)
    for job in RQJob.fetch_many(retried, connection=sync_conn):
        assert job is not None
        assert job.get_status(refresh=False) == JobStatus.QUEUED
        assert job.retries_left == 0
    assert_abandoned_failures(sync_conn, plain)
    assert_nothing_in_flight(sync_conn)


@pytest.mark.parametrize('recoverer', ['aiorq', 'rq'])
def test_fresh_worker_recovers_jobs_of_a_killed_aiorq_worker(
    sync_conn: redis.Redis, redis_url: str, processes: Processes, recoverer: str
) -> None:
    """A fresh burst worker's startup maintenance re-queues and fails the abandoned jobs; it then
    runs the re-queued ones (now sleeping 0 s)."""
    retried, plain = kill_mid_job(sync_conn, redis_url, processes)
    sync_conn.set('sleep_seconds', 0)

    if recoverer == 'aiorq':
        args = aiorq_worker(redis_url, '--burst')
    else:
        args = [sys.executable, '-m', 'rq.cli', 'worker', '--burst', '--url', redis_url, QUEUE]
    worker = processes.start(f'recoverer-{recoverer}', args)
    try:
        code = worker.wait(60)
    except subprocess.TimeoutExpired:
        code = None
    assert code == 0, processes.log(worker)

    for job in RQJob.fetch_many(retried, connection=sync_conn):
        assert job is not None
        assert job.get_status(refresh=False) == JobStatus.FINISHED
        assert job.retries_left == 0
        assert job.return_value() == 0.0
    assert_abandoned_failures(sync_conn, plain)
    assert_nothing_in_flight(sync_conn)
    assert sync_conn.llen(f'rq:queue:{QUEUE}') == 0
    # The first attempt of every job, then the second attempt of each retried one.
    assert Counter(x.decode() for x in sync_conn.lrange('ran', 0, -1)) == {
        **{i: 2 for i in retried},
        **{i: 1 for i in plain},
    }
