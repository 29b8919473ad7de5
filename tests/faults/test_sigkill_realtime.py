"""The kill -9 recovery waited for in real time (no rewritten scores): an aiorq worker holding the
scheduler lock dies with jobs running; an idle survivor, blocked in its pop, fails or retries
those jobs on its own maintenance clock within the heartbeat TTL plus its maintenance interval,
and takes the scheduler lock over once the dead holder's expires (rq's 61 s), so a job scheduled
after the kill still runs. The only test that waits this long (about 70 s): it is the proof the
steered tests stand in for."""

from __future__ import annotations

import os
import signal
import sys
import time
from datetime import datetime, timedelta, timezone

import redis
import rq
import tasks
from processes import Processes
from rq.job import Job as RQJob
from rq.job import JobStatus
from rq.scheduler import RQScheduler

QUEUE = 'doomed'
MAINTENANCE = 2
INTERVAL = 1  # --job-monitoring-interval: heartbeat TTL min(timeout, 1) + 60 = 61 s


def aiorq_worker(url: str, *options: str) -> list[str]:
    return [sys.executable, '-m', 'aiorq_worker', 'worker', '--url', url, '-s', *options, QUEUE]


def test_idle_survivor_recovers_jobs_and_scheduler(
    sync_conn: redis.Redis, redis_url: str, processes: Processes
) -> None:
    q = rq.Queue(QUEUE, connection=sync_conn)
    retried = [q.enqueue(tasks.slow_from_redis, retry=rq.Retry(max=1)).id for _ in range(3)]
    plain = [q.enqueue(tasks.slow_from_redis).id for _ in range(3)]
    victim = processes.start(
        'victim', aiorq_worker(redis_url, '--job-monitoring-interval', str(INTERVAL), '--concurrency', '8')
    )
    deadline = time.monotonic() + 20
    while sync_conn.llen('ran') < 6 or sync_conn.get(f'rq:scheduler-lock:{QUEUE}') is None:
        assert victim.poll() is None and time.monotonic() < deadline, processes.log(victim)
        time.sleep(0.05)
    lock_owner = sync_conn.get(f'rq:scheduler-lock:{QUEUE}')
    assert lock_owner is not None
    # The victim's six executions in the started registry (members job_id:execution_id).
    claims = set(sync_conn.zrange(f'rq:wip:{QUEUE}', 0, -1))
    assert len(claims) == 6, claims
    assert RQScheduler.fetch(lock_owner.decode(), sync_conn).pid == victim.pid

    survivor = processes.start(
        'survivor', aiorq_worker(redis_url, '--maintenance-interval', str(MAINTENANCE), '--name', 'survivor')
    )
    while sync_conn.hget('rq:worker:survivor', 'state') != b'idle':
        assert survivor.poll() is None and time.monotonic() < deadline + 10, processes.log(survivor)
        time.sleep(0.05)

    os.kill(victim.pid, signal.SIGKILL)
    assert victim.wait(10) == -signal.SIGKILL
    killed = time.monotonic()
    sync_conn.set('sleep_seconds', 0)  # the retried runs are short
    later = q.enqueue_at(datetime.now(timezone.utc) + timedelta(seconds=15), tasks.add, 2, 3)

    ttl = INTERVAL + 60
    recovered: dict[str, float] = {}
    while len(recovered) < 7:
        # Read before what released the jobs: a job the survivor had taken by now was queued earlier.
        survivor_state = sync_conn.hget('rq:worker:survivor', 'state')
        elapsed = time.monotonic() - killed
        assert elapsed < ttl + MAINTENANCE + 20, f'{sorted(recovered)} after {elapsed:.0f}s\n{processes.logs()}'
        for job in RQJob.fetch_many(retried + plain + [later.id], connection=sync_conn):
            assert job is not None
            status = job.get_status(refresh=False)
            if job.id not in recovered and (
                (job.id in plain and status == JobStatus.FAILED) or status == JobStatus.FINISHED
            ):
                recovered[job.id] = elapsed
        if claims <= set(sync_conn.zrange(f'rq:wip:{QUEUE}', 0, -1)) and (
            sync_conn.get(f'rq:scheduler-lock:{QUEUE}') == lock_owner
        ):
            # Until the dead worker's jobs and scheduler lock are released nothing can be queued:
            # the survivor has had nothing to run, it stayed idle. (Once they are, it runs the
            # requeued retries and the scheduled job, busy before they count as recovered.)
            assert survivor_state == b'idle', f'{survivor_state!r} after {elapsed:.0f}s\n{processes.logs()}'
        time.sleep(0.5)

    # Abandoned no earlier than the heartbeat deadline, and no later than one maintenance pass after.
    for job_id in retried + plain:
        assert ttl - 5 <= recovered[job_id] <= ttl + MAINTENANCE + 10, recovered
    failed_registry = q.failed_job_registry
    assert sorted(failed_registry.get_job_ids()) == sorted(plain)
    for job_id in plain:
        result = RQJob.fetch(job_id, connection=sync_conn).latest_result()
        assert result is not None and 'AbandonedJobError' in (result.exc_string or '')
    for job_id in retried:
        assert RQJob.fetch(job_id, connection=sync_conn).return_value() == 0.0
    # The scheduled job ran once the survivor took the lock over (the dead holder's expired).
    assert RQJob.fetch(later.id, connection=sync_conn).return_value() == 5
    new_owner = sync_conn.get(f'rq:scheduler-lock:{QUEUE}')
    assert new_owner is not None and new_owner != lock_owner
    assert RQScheduler.fetch(new_owner.decode(), sync_conn).pid == survivor.pid
    assert sync_conn.zcard(f'rq:wip:{QUEUE}') == 0
