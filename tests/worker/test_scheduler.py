"""The scheduler clock against stock rq's ``RQScheduler``: the same writes, the same locks, mixed
fleets moving each due job once, burst mode, bad entries, and the worker's other clocks
(maintenance while idle, the worker state)."""

from __future__ import annotations

import asyncio
import logging
import os
import statistics
import sys
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import redis
import rq
import tasks
from diffkit import compare
from processes import Processes
from redis.asyncio import Redis
from rq.job import Job as RQJob
from rq.scheduler import RQScheduler
from rq.worker import Worker as RQWorker
from waiting import wait_for

import aiorq
from aiorq import JobStatus, Queue
from aiorq_worker import Worker
from aiorq_worker.scheduler import Scheduler


async def status_is(job: aiorq.Job, status: JobStatus) -> bool:
    return await job.get_status() == status


def past(seconds: int = 5) -> datetime:
    return datetime.now(timezone.utc) - timedelta(seconds=seconds)


def scheduled_mix(conn: redis.Redis) -> None:
    """Every kind of due entry rq's scheduler handles, plus one not yet due."""
    q = rq.Queue('q', connection=conn)
    q.enqueue_at(past(), tasks.add, 1, 2, job_id='plain')
    q.enqueue_at(past(3), tasks.add, 3, 4, job_id='front', at_front=True)
    q.enqueue_at(past(), tasks.add, 5, 6, job_id='limited', rate_limit=rq.RateLimit('k', concurrency=1))
    q.enqueue_at(past(), tasks.add, 7, 8, job_id='was-deferred')
    conn.hset(RQJob.key_for('was-deferred'), 'status', 'deferred')
    conn.zadd('rq:deferred:q', {'was-deferred': int(time.time())})
    conn.zadd('rq:scheduled:q', {'ghost': int(time.time()) - 5})
    q.enqueue_at(datetime.now(timezone.utc) + timedelta(hours=1), tasks.add, 9, 9, job_id='later')
    q.enqueue(tasks.add, 0, 0, job_id='already-queued')


async def test_moves_due_jobs_as_rq_does(rq_conn: redis.Redis, aconn: Redis, aiorq_sync: redis.Redis) -> None:
    async def scenario(lib: Any, conn: Any) -> None:
        if lib is rq:
            stock = RQScheduler(['q'], connection=conn, name='sched')
            stock.acquire_locks()
            stock.register_birth()
            stock.enqueue_scheduled_jobs()
            stock.heartbeat()
        else:
            ours = Scheduler(conn, ['q'], name='sched')
            await ours.acquire()
            assert await ours.enqueue_due() == 4
            await ours.heartbeat()

    await compare(scenario, rq_conn, aconn, aiorq_sync, setup=scheduled_mix)
    # What stock rq reads back: the queue order, the pid of the lock holder.
    expected = ['front', 'already-queued', 'plain', 'was-deferred', 'limited']
    assert rq.Queue('q', connection=aiorq_sync).get_job_ids() == expected
    assert rq.Queue('q', connection=aiorq_sync).scheduler_pid == os.getpid()
    assert rq.scheduler.RQScheduler.fetch('sched', aiorq_sync).pid == os.getpid()
    assert RQJob.fetch('limited', connection=aiorq_sync).get_status() == JobStatus.QUEUED


async def test_release_as_rq_does(rq_conn: redis.Redis, aconn: Redis, aiorq_sync: redis.Redis) -> None:
    async def scenario(lib: Any, conn: Any) -> None:
        if lib is rq:
            stock = RQScheduler(['q', 'other'], connection=conn, name='sched')
            stock.acquire_locks()
            stock.register_birth()
            stock.stop()
        else:
            ours = Scheduler(conn, ['q', 'other'], name='sched')
            await ours.acquire()
            await ours.release()
        conn_ = conn
        if lib is rq:
            conn_.set('rq:scheduler-lock:third', 'someone-else', ex=61)
        else:
            await conn_.set('rq:scheduler-lock:third', 'someone-else', ex=61)

    await compare(scenario, rq_conn, aconn, aiorq_sync, setup=scheduled_mix)


async def test_lock_held_by_stock_scheduler_is_respected(conn: Redis, sync_conn: redis.Redis) -> None:
    scheduled_mix(sync_conn)
    stock = RQScheduler(['q'], connection=sync_conn, name='stock')
    assert stock.acquire_locks() == {'q'}
    ours = Scheduler(conn, ['q'], name='ours')
    await ours.acquire()
    assert ours.held == set() and not ours.registered
    assert await ours.enqueue_due() == 0
    assert sync_conn.zcard('rq:scheduled:q') == 6
    # The stock holder goes away cleanly: ours takes the queue on its next attempt.
    stock.release_locks()
    await ours.acquire()
    assert ours.held == {'q'}
    assert await ours.enqueue_due() == 4
    # A takeover seen by the heartbeat drops the queue (the lock is rq's: whoever holds it moves).
    sync_conn.set('rq:scheduler-lock:q', 'stock', ex=61)
    await ours.heartbeat()
    assert ours.held == set()
    await ours.release()
    assert sync_conn.get('rq:scheduler-lock:q') == b'stock'


async def test_bad_entries_do_not_stop_the_scheduler(
    conn: Redis, sync_conn: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    q = rq.Queue('q', connection=sync_conn)
    q.enqueue_at(past(), tasks.add, 1, 1, job_id='corrupt')
    sync_conn.hset(RQJob.key_for('corrupt'), 'status', 'no-such-status')
    q.enqueue_at(past(), tasks.add, 1, 2, job_id='fine')
    sync_conn.zadd('rq:scheduled:q', {'vanished': int(time.time()) - 1})
    ours = Scheduler(conn, ['q'], name='ours')
    await ours.acquire()
    with caplog.at_level(logging.ERROR, logger='aiorq.scheduler'):
        assert await ours.enqueue_due() == 1
    assert 'scheduled job corrupt on q cannot be read' in caplog.text
    assert 'no-such-status' in caplog.text
    # The corrupt entry stays where it was (nothing dropped); the vanished id is removed as rq does.
    assert sync_conn.zrange('rq:scheduled:q', 0, -1) == [b'corrupt']
    assert q.get_job_ids() == ['fine']
    # Looked at again only after a while: no tight loop on an entry that cannot move.
    assert await ours.enqueue_due() == 0
    await ours.release()


async def test_worker_moves_jobs_in_time_and_retries_with_interval(conn: Redis, sync_conn: redis.Redis) -> None:
    """End to end in real time: due jobs (scheduled by aiorq and by stock rq) move shortly after
    their due second, and retries and repeats with an interval come back by themselves."""
    q = Queue('q', connection=conn)
    worker = Worker('q', connection=conn, name='timekeeper', concurrency=4)
    task = asyncio.ensure_future(worker.work(with_scheduler=True))
    # rq's scheduler_pid reads the lock, then the record written just after it (as rq does).
    await wait_for(lambda: rq.Queue('q', connection=sync_conn).scheduler_pid == os.getpid())
    due = int(time.time()) + 2
    ours = [await q.enqueue_at(datetime.fromtimestamp(due, timezone.utc), tasks.add, i, 1) for i in range(5)]
    stock = rq.Queue('q', connection=sync_conn).enqueue_at(datetime.fromtimestamp(due, timezone.utc), tasks.add, 1, 1)
    flaky = await q.enqueue(tasks.record_fail, retry=aiorq.Retry(max=1, interval=1))
    repeated = await q.enqueue(tasks.add, 2, 2, repeat=aiorq.Repeat(times=1, interval=1))
    for job in ours:
        assert await job.latest_result(timeout=8) is not None
    # rq's blocking wait, off the loop: the worker shares this loop and must run the job meanwhile.
    stock_job = rq.job.Job.fetch(stock.id, connection=sync_conn)
    assert await asyncio.to_thread(stock_job.latest_result, timeout=5) is not None
    lags = []
    for job in ours:
        await job.refresh()
        assert await job.result == job.args[0] + 1
        lags.append(job.enqueued_at.replace(tzinfo=timezone.utc).timestamp() - due)
    # rq polls once a second (a lag of up to 1 s); aiorq wakes at the due second. Loose bound
    # on a shared machine; benchmarks/scheduler_lag.py measures it.
    assert 0 <= statistics.median(lags) < 0.5, lags
    # Failed, scheduled for its retry a second later, moved back, run again, failed for good.
    await wait_for(lambda: sync_conn.lrange('ran', 0, -1) == [flaky.id.encode()] * 2, 8)
    await wait_for(lambda: status_is(flaky, JobStatus.FAILED), 5)
    await wait_for(lambda: sync_conn.xlen(f'rq:results:{repeated.id}') == 2, 8)
    worker.request_stop()
    await asyncio.wait_for(task, 10)
    # Locks and record released on the way out.
    assert sync_conn.get('rq:scheduler-lock:q') is None
    assert not sync_conn.keys('rq:scheduler:*')


def aiorq_worker(url: str, *options: str) -> list[str]:
    return [sys.executable, '-m', 'aiorq_worker', 'worker', '--url', url, *options, 'q']


def stock_worker(url: str, *options: str) -> list[str]:
    return [sys.executable, '-m', 'rq.cli', 'worker', '--url', url, *options, 'q']


async def test_burst_with_scheduler(redis_url: str, sync_conn: redis.Redis, processes: Processes) -> None:
    q = rq.Queue('q', connection=sync_conn)
    job = q.enqueue_at(past(), tasks.add, 20, 22)
    later = q.enqueue_in(timedelta(hours=1), tasks.add, 0, 1)
    proc = processes.start('burst', aiorq_worker(redis_url, '--burst', '-s'))
    assert proc.wait(30) == 0, processes.log(proc)
    assert job.latest_result() is not None and job.return_value() == 42
    assert later.get_status() == JobStatus.SCHEDULED
    assert sync_conn.get('rq:scheduler-lock:q') is None
    assert not sync_conn.keys('rq:scheduler:*')


async def test_mixed_fleet_moves_each_job_once(redis_url: str, sync_conn: redis.Redis, processes: Processes) -> None:
    """A stock ``rq worker --with-scheduler`` and two ``aiorq worker -s``: every due job runs once;
    when the aiorq lock holder stops, another scheduler takes the queue over."""
    processes.start('aiorq-1', aiorq_worker(redis_url, '-s', '--concurrency', '4'))
    deadline = time.monotonic() + 15
    while sync_conn.get('rq:scheduler-lock:q') is None:
        assert time.monotonic() < deadline, processes.logs()
        time.sleep(0.05)
    processes.start('aiorq-2', aiorq_worker(redis_url, '-s', '--concurrency', '4'))
    processes.start('stock', stock_worker(redis_url, '--with-scheduler', '-w', 'rq.worker.SimpleWorker'))
    q = rq.Queue('q', connection=sync_conn)
    start = int(time.time()) + 2
    ids = []
    for i in range(60):
        when = datetime.fromtimestamp(start + i // 10, timezone.utc)
        func = tasks.record_add if i % 2 else tasks.record_async_add
        ids.append(q.enqueue_at(when, func, i, 1).id)
    time.sleep(1)
    holder = sync_conn.get('rq:scheduler-lock:q')
    assert holder is not None
    # Stop the aiorq process holding the lock (warm shutdown releases it): another takes over.
    holder_pid = int(sync_conn.hget(f'rq:scheduler:{holder.decode()}', 'pid') or 0)
    victim = next((p for _, p, _, _ in processes.procs.values() if p.pid == holder_pid), None)
    assert victim is not None, 'the first aiorq scheduler should hold the lock'
    victim.terminate()
    assert victim.wait(15) == 0
    for i in range(60, 80):
        ids.append(q.enqueue_at(datetime.fromtimestamp(start + 7, timezone.utc), tasks.record_add, i, 1).id)
    deadline = time.monotonic() + 40
    while sync_conn.llen('ran') < len(ids):
        assert time.monotonic() < deadline, f'{sync_conn.llen("ran")} ran\n{processes.logs()}'
        time.sleep(0.1)
    time.sleep(1)
    ran = [r.decode() for r in sync_conn.lrange('ran', 0, -1)]
    assert sorted(ran) == sorted(ids), 'each due job runs exactly once'
    assert all(j.get_status() == JobStatus.FINISHED for j in RQJob.fetch_many(ids, connection=sync_conn) if j)
    assert sync_conn.zcard('rq:scheduled:q') == 0
    new_holder = sync_conn.get('rq:scheduler-lock:q')
    assert new_holder is not None and new_holder != holder


async def test_maintenance_runs_while_idle(conn: Redis, sync_conn: redis.Redis) -> None:
    """Maintenance is its own clock: an idle worker blocked in its pop still heals the queue."""
    worker = Worker('q', connection=conn, name='janitor', maintenance_interval=1)
    task = asyncio.ensure_future(worker.work())
    await wait_for(lambda: sync_conn.hget('rq:worker:janitor', 'state') == b'idle' and worker.maintenance.passes)
    await asyncio.sleep(0.2)  # blocked in BLMOVE by now
    # A started job whose worker vanished: a deadline in the past (steered; see tests/faults for
    # the same recovery waited for in real time).
    stranded = RQJob.create(
        tasks.add, args=(1, 2), connection=sync_conn, origin='q', status=JobStatus.STARTED, retry=rq.Retry(max=1)
    )
    stranded.save()
    sync_conn.zadd('rq:wip:q', {f'{stranded.id}:e1': int(time.time()) - 1})
    job = await aiorq.Job.fetch(stranded.id, connection=conn)
    assert await job.latest_result(timeout=8) is not None
    assert await job.result == 3  # retried by maintenance, then run by the same idle worker
    # The pass that retried it may still be finishing its other steps when the job is done.
    await wait_for(lambda: worker.maintenance.passes >= 2, 5)
    worker.request_stop()
    await asyncio.wait_for(task, 10)


async def test_worker_state_follows_executions(conn: Redis, sync_conn: redis.Redis) -> None:
    q = Queue('q', connection=conn)
    worker = Worker('q', connection=conn, name='honest', concurrency=4)
    task = asyncio.ensure_future(worker.work())
    await wait_for(lambda: sync_conn.hget('rq:worker:honest', 'state') == b'idle')
    jobs = [await q.enqueue(tasks.async_sleep_for, 0.8 + i * 0.2) for i in range(3)]
    await wait_for(lambda: sync_conn.scard('rq:worker:honest:executions') == 3)
    seen = RQWorker.find_by_key('rq:worker:honest', connection=sync_conn)
    assert seen is not None and seen.get_state() == 'busy'
    assert seen.get_current_job_id() in {j.id for j in jobs}
    assert len(seen.get_current_executions()) == 3
    await wait_for(lambda: status_is(jobs[0], JobStatus.FINISHED), 5)
    # Still running the others: still busy.
    assert sync_conn.hget('rq:worker:honest', 'state') == b'busy'
    await wait_for(lambda: status_is(jobs[2], JobStatus.FINISHED), 5)
    ended = time.monotonic()
    await wait_for(lambda: sync_conn.hget('rq:worker:honest', 'state') == b'idle', 5, interval=0.01)
    assert time.monotonic() - ended < 1.0
    seen = RQWorker.find_by_key('rq:worker:honest', connection=sync_conn)
    assert seen is not None and seen.get_current_job_id() is None
    worker.request_stop()
    await asyncio.wait_for(task, 10)


async def test_wakeup_hint_reaches_a_sleeping_scheduler(conn: Redis, sync_conn: redis.Redis) -> None:
    """With the poll pushed far away, only the hint published by aiorq's enqueue_at can tell the
    scheduler about the new job: it must still move it at its due second."""
    ours = Scheduler(conn, ['q'], name='sleeper')
    ours.POLL = 60
    task = asyncio.ensure_future(ours.run())
    await wait_for(lambda: ours.held == {'q'} and ours.next_due == {'q': None})
    await asyncio.sleep(0.2)  # asleep for a minute now
    due = int(time.time()) + 2
    job = await Queue('q', connection=conn).enqueue_at(datetime.fromtimestamp(due, timezone.utc), tasks.add, 1, 1)
    await wait_for(lambda: sync_conn.lrange('rq:queue:q', 0, -1) == [job.id.encode()], 5, interval=0.005)
    assert 0 <= time.time() - due < 0.5
    ours.stop()
    await asyncio.wait_for(task, 5)
    await ours.release()
    assert sync_conn.get('rq:scheduler-lock:q') is None
