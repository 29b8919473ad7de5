"""The aiorq worker as other rq processes see it: registration, commands, suspension, timeouts."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from typing import Any, cast

import pytest
import redis
import rq
import rq.command
import tasks
from redis.asyncio import Redis
from rq.job import Job as RQJob
from rq.results import Result
from waiting import wait_for

import aiorq
from aiorq import JobStatus, Queue
from aiorq_worker import Worker


async def test_runs_jobs_concurrently(conn: Redis, sync_conn: redis.Redis) -> None:
    q = Queue('q', connection=conn)
    jobs = [await q.enqueue(tasks.track_concurrency, 0.3) for _ in range(8)]
    await Worker('q', connection=conn, concurrency=4, name='conc').work(burst=True)
    assert int(sync_conn.get('peak')) == 4
    assert [await j.get_status() for j in jobs] == [JobStatus.FINISHED] * 8


async def test_registration_visible_to_rq(conn: Redis, sync_conn: redis.Redis, redis_url: str) -> None:
    worker = Worker(['q', 'other'], connection=conn, name='visible')
    task = asyncio.ensure_future(worker.work())
    await wait_for(lambda: sync_conn.exists('rq:worker:visible'))
    await wait_for(lambda: sync_conn.hget('rq:worker:visible', 'state') == b'idle')
    found = rq.Worker.all(connection=sync_conn)
    assert [w.name for w in found] == ['visible']
    assert found[0].queue_names() == ['q', 'other']
    assert found[0].get_state() == 'idle'
    info = subprocess.run([sys.executable, '-m', 'rq.cli', 'info', '--url', redis_url], capture_output=True, text=True)
    assert 'visible' in info.stdout and 'idle' in info.stdout
    rq.command.send_shutdown_command(sync_conn, 'visible')
    await asyncio.wait_for(task, 10)
    assert rq.Worker.all(connection=sync_conn) == []
    assert sync_conn.hget('rq:worker:visible', 'death')


async def test_stock_stop_job_command(conn: Redis, sync_conn: redis.Redis) -> None:
    q = Queue('q', connection=conn)
    long = await q.enqueue(tasks.async_sleep_for, 30)
    other = await q.enqueue(tasks.async_sleep_for, 0.5)
    worker = Worker('q', connection=conn, name='stopper', concurrency=2)
    task = asyncio.ensure_future(worker.work(burst=True))
    await wait_for(lambda: long.get_status(), 10)
    await wait_for(lambda: sync_conn.hget(RQJob.key_for(long.id), 'status') == b'started')
    rq.command.send_stop_job_command(sync_conn, long.id)
    await asyncio.wait_for(task, 10)
    assert await long.get_status() == JobStatus.STOPPED
    result = await long.latest_result()
    assert result is not None and result.type == Result.Type.FAILED
    assert result.exc_string == 'Job stopped by user, work-horse terminated.'
    assert await q.failed_job_registry.get_job_ids() == [long.id]
    assert await other.result == 0.5
    assert sync_conn.zcard('rq:wip:q') == 0


async def test_a_stopped_job_on_rqs_path_keeps_its_last_heartbeat(conn: Redis, sync_conn: redis.Redis) -> None:
    """A job on rq's path (it has a stopped callback) stopped after a heartbeat: its hash keeps
    that beat's time, as rq's job object holds it, not the time of its claim."""
    q = Queue('q', connection=conn)
    long = await q.enqueue(tasks.async_sleep_for, 30, on_stopped=tasks.on_stopped_cb)
    worker = Worker('q', connection=conn, name='beaten', job_monitoring_interval=1)
    task = asyncio.ensure_future(worker.work(burst=True))
    key = RQJob.key_for(long.id)
    await wait_for(lambda: sync_conn.hget(key, 'status') == b'started')
    claimed = sync_conn.hget(key, 'last_heartbeat')
    await wait_for(lambda: sync_conn.hget(key, 'last_heartbeat') != claimed, 10)
    beat = cast(bytes, sync_conn.hget(key, 'last_heartbeat'))
    rq.command.send_stop_job_command(sync_conn, long.id)
    await asyncio.wait_for(task, 10)
    assert await long.get_status() == JobStatus.STOPPED
    assert cast(bytes, sync_conn.hget(key, 'last_heartbeat')) >= beat > cast(bytes, claimed)


async def test_suspension_wakes_a_blocked_worker(conn: Redis, sync_conn: redis.Redis) -> None:
    worker = Worker('q', connection=conn, name='sleepy')
    task = asyncio.ensure_future(worker.work())
    await wait_for(lambda: sync_conn.hget('rq:worker:sleepy', 'state') == b'idle')
    await asyncio.sleep(0.3)  # blocked in BLMOVE by now
    rq.suspension.suspend(sync_conn)
    await wait_for(lambda: sync_conn.hget('rq:worker:sleepy', 'state') == b'suspended', 5)
    job = await Queue('q', connection=conn).enqueue(tasks.add, 1, 2)
    await asyncio.sleep(1.5)
    assert await job.get_status() == JobStatus.QUEUED
    rq.suspension.resume(sync_conn)
    assert (await job.latest_result(timeout=5)) is not None
    assert await job.result == 3
    worker.request_stop()
    await asyncio.wait_for(task, 10)


async def test_refuses_to_start_while_suspended(redis_url: str, sync_conn: redis.Redis) -> None:
    rq.suspension.suspend(sync_conn)
    cmd = [sys.executable, '-m', 'aiorq_worker', 'worker', '--url', redis_url, 'q']
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert 'suspended' in done.stderr
    rq.suspension.resume(sync_conn)


async def test_timeouts(conn: Redis) -> None:
    q = Queue('q', connection=conn)
    coro = await q.enqueue(tasks.async_sleep_for, 5, job_timeout=1)
    plain = await q.enqueue(tasks.sleep_for, 3, job_timeout=1)
    started = time.monotonic()
    await Worker('q', connection=conn, name='timer').work(burst=True)
    for job in (coro, plain):
        assert await job.get_status() == JobStatus.FAILED
        result = await job.latest_result()
        assert result is not None
        assert 'JobTimeoutException: Task exceeded maximum timeout value (1 seconds)' in (result.exc_string or '')
    # The coroutine was cancelled at its timeout; the thread ran on but its result was dropped.
    assert time.monotonic() - started < 4.5


async def test_current_job_state_and_hooks(conn: Redis) -> None:
    q = Queue('q', connection=conn)
    introspect = await q.enqueue(tasks.introspect, 9)
    stateful = await q.enqueue(tasks.uses_worker_state)
    plain = await q.enqueue(tasks.stock_progress, 2)
    events: list[str] = []

    async def startup(worker: Worker) -> None:
        worker.state.greeting = 'hello'
        events.append('up')

    async def shutdown(worker: Worker) -> None:
        events.append('down')

    await Worker('q', connection=conn, on_startup=startup, on_shutdown=shutdown).work(burst=True)
    assert events == ['up', 'down']
    assert await introspect.result == {'id': introspect.id, 'origin': 'q', 'meta': {'progress': 9}, 'status': 'started'}
    assert await stateful.result == 'hello'
    assert await plain.result == 4
    assert (await aiorq.Job.fetch(plain.id, connection=conn)).meta == {'progress': 2}


async def test_heartbeats_keep_long_jobs_alive(conn: Redis, sync_conn: redis.Redis) -> None:
    q = Queue('q', connection=conn)
    job = await q.enqueue(tasks.async_sleep_for, 2.5)
    worker = Worker('q', connection=conn, name='beater', job_monitoring_interval=1)
    task = asyncio.ensure_future(worker.work(burst=True))
    await wait_for(lambda: sync_conn.zcard('rq:wip:q') == 1)
    first = sync_conn.zrange('rq:wip:q', 0, -1, withscores=True)[0][1]
    first_beat = sync_conn.hget(RQJob.key_for(job.id), 'last_heartbeat')
    await asyncio.sleep(2)
    second = sync_conn.zrange('rq:wip:q', 0, -1, withscores=True)[0][1]
    assert second > first
    assert sync_conn.hget(RQJob.key_for(job.id), 'last_heartbeat') != first_beat
    assert sync_conn.ttl('rq:worker:beater') > 0
    await asyncio.wait_for(task, 10)
    assert await job.result == 2.5


async def test_bad_jobs_do_not_stop_the_worker(conn: Redis, sync_conn: redis.Redis) -> None:
    q = Queue('q', connection=conn)
    sync_q = rq.Queue('q', connection=sync_conn)
    missing = sync_q.enqueue('tasks.nope')
    corrupt = sync_q.enqueue(tasks.add, 1, 1)
    sync_conn.hset(RQJob.key_for(corrupt.id), 'data', b'garbage')
    bad_status = sync_q.enqueue(tasks.add, 1, 1)
    sync_conn.hset(RQJob.key_for(bad_status.id), 'status', 'running')
    vanished = sync_q.enqueue(tasks.add, 1, 1)
    sync_conn.delete(RQJob.key_for(vanished.id))
    raising = await q.enqueue(tasks.async_fail)
    fine = await q.enqueue(tasks.add, 2, 2)
    await Worker('q', connection=conn, name='robust').work(burst=True)
    assert await fine.result == 4
    for job_id in (missing.id, corrupt.id, raising.id):
        assert sync_conn.hget(RQJob.key_for(job_id), 'status') == b'failed', job_id
    assert 'KeyError' in ((await raising.latest_result()).exc_string or '')  # type: ignore[union-attr]
    assert sync_conn.zscore('rq:failed:q', bad_status.id) is not None
    assert sync_conn.llen('rq:queue:q') == 0
    assert sync_conn.llen('rq:queue:q:intermediate') == 0
    assert sync_conn.zcard('rq:wip:q') == 0


async def test_process_mode(conn: Redis, sync_conn: redis.Redis) -> None:
    q = Queue('q', connection=conn)
    ok = await q.enqueue(tasks.stock_progress, 3)
    slow = await q.enqueue(tasks.sleep_for, 30, job_timeout=1)
    bad = await q.enqueue(tasks.fail, 'child')
    after = await q.enqueue(tasks.add, 2, 5)
    coro = await q.enqueue(tasks.async_add, 1, 1)
    started = time.monotonic()
    await Worker('q', connection=conn, name='procs', concurrency=2, sync_jobs='process').work(burst=True)
    assert time.monotonic() - started < 25  # the overrunning child was killed, not waited for
    assert await ok.result == 6
    assert (await aiorq.Job.fetch(ok.id, connection=conn)).meta == {'progress': 3}
    assert await slow.get_status() == JobStatus.FAILED
    assert 'Task exceeded maximum timeout value (1 seconds)' in ((await slow.latest_result()).exc_string or '')  # type: ignore[union-attr]
    failure = (await bad.latest_result()).exc_string or ''  # type: ignore[union-attr]
    assert 'ValueError: child' in failure and 'tasks.py' in failure
    assert await after.result == 7  # the pool survived the kill
    assert await coro.result == 2


async def test_meta_progress_read_from_outside_while_running(conn: Redis, sync_conn: redis.Redis) -> None:
    job = await Queue('q', connection=conn).enqueue(tasks.progress_then_wait)
    task = asyncio.ensure_future(Worker('q', connection=conn, name='progress').work(burst=True))
    await wait_for(lambda: RQJob.fetch(job.id, connection=sync_conn).get_meta().get('progress') == 50)
    assert RQJob.fetch(job.id, connection=sync_conn).get_status() == 'started'
    assert (await aiorq.Job.fetch(job.id, connection=conn)).meta == {'progress': 50}
    sync_conn.rpush('go', 1)
    await asyncio.wait_for(task, 20)
    assert await job.result == 'done'
    assert RQJob.fetch(job.id, connection=sync_conn).get_meta() == {'progress': 100}


async def test_cli_finds_redis_like_rq(conn: Redis, redis_url: str, tmp_path: Any) -> None:
    """No --url: a config module (REDIS_URL, QUEUES), else REDIS_URL from the environment."""
    import os

    q = Queue('from_config', connection=conn)
    first = await q.enqueue(tasks.add, 1, 1)
    (tmp_path / 'aiorq_settings.py').write_text(
        f'REDIS_URL = {redis_url!r}\nQUEUES = ["from_config"]\nNAME = "configured"\n'
    )
    env = {k: v for k, v in os.environ.items() if k not in ('RQ_REDIS_URL', 'REDIS_URL')}
    env['PYTHONPATH'] = os.pathsep.join([str(tmp_path), env.get('PYTHONPATH', '')])
    cmd = [sys.executable, '-m', 'aiorq_worker', 'worker', '--burst']
    done = subprocess.run([*cmd, '-c', 'aiorq_settings'], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert await first.result == 2
    assert 'configured' in done.stderr
    second = await Queue('default', connection=conn).enqueue(tasks.add, 2, 2)
    done = subprocess.run(cmd, env={**env, 'REDIS_URL': redis_url}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert await second.result == 4


async def test_queue_order_and_dequeue_strategies(conn: Redis, sync_conn: redis.Redis) -> None:
    """With one slot the worker serves queues in order (default) or rotates them (round_robin),
    as rq's worker does."""

    async def run(strategy: str) -> list[str]:
        sync_conn.delete('ran')
        ids: dict[str, str] = {}
        for name in ('high', 'low'):
            for i in range(3):
                job = await Queue(name, connection=conn).enqueue(tasks.record_async_add, i, i)
                ids[job.id] = name
        await Worker(['high', 'low'], connection=conn, concurrency=1, dequeue_strategy=strategy).work(burst=True)
        return [ids[j.decode()] for j in sync_conn.lrange('ran', 0, -1)]

    assert await run('default') == ['high'] * 3 + ['low'] * 3
    assert await run('round_robin') == ['high', 'low'] * 3


async def test_no_prefetch(conn: Redis, sync_conn: redis.Redis) -> None:
    """Only as many jobs leave the queue as there are free slots, and none waits in the
    intermediate list (rq's maintenance would fail it)."""
    q = Queue('q', connection=conn)
    for _ in range(6):
        await q.enqueue(tasks.async_sleep_for, 0.5)
    task = asyncio.ensure_future(Worker('q', connection=conn, concurrency=2, name='noprefetch').work(burst=True))
    await wait_for(lambda: sync_conn.zcard('rq:wip:q') == 2)
    assert sync_conn.llen('rq:queue:q') == 4
    assert sync_conn.llen('rq:queue:q:intermediate') == 0
    assert sync_conn.scard('rq:worker:noprefetch:executions') == 2
    assert sync_conn.hget('rq:worker:noprefetch', 'state') == b'busy'
    await asyncio.wait_for(task, 20)


async def test_own_timeout_error_is_not_the_time_limit(conn: Redis) -> None:
    job = await Queue('q', connection=conn).enqueue(tasks.raises_timeout_error, job_timeout=60)
    await Worker('q', connection=conn).work(burst=True)
    failure = (await job.latest_result()).exc_string or ''  # type: ignore[union-attr]
    assert 'my own timeout' in failure and 'JobTimeoutException' not in failure


async def test_heartbeat_repairs_expired_hashes(conn: Redis, sync_conn: redis.Redis) -> None:
    """rq's rule (§4.8): a heartbeat that recreates a job hash deletes it again; one that
    recreates the worker's hash writes its base fields back."""
    job = await Queue('q', connection=conn).enqueue(tasks.async_sleep_for, 3)
    worker = Worker('q', connection=conn, name='repairer', job_monitoring_interval=1)
    task = asyncio.ensure_future(worker.work(burst=True))
    await wait_for(lambda: sync_conn.hget(RQJob.key_for(job.id), 'status') == b'started')
    sync_conn.delete('rq:worker:repairer', RQJob.key_for(job.id))
    await wait_for(lambda: sync_conn.hget('rq:worker:repairer', 'pid') is not None, 5)
    assert sync_conn.hget('rq:worker:repairer', 'queues') == b'q'
    assert sync_conn.ttl('rq:worker:repairer') > 0
    await asyncio.sleep(1.2)  # at least one more beat
    assert not sync_conn.exists(RQJob.key_for(job.id))
    await asyncio.wait_for(task, 20)


async def test_stock_stop_execution_command(conn: Redis, sync_conn: redis.Redis) -> None:
    job = await Queue('q', connection=conn).enqueue(tasks.async_sleep_for, 30)
    task = asyncio.ensure_future(Worker('q', connection=conn, name='exec-stopper').work(burst=True))
    await wait_for(lambda: sync_conn.zcard('rq:wip:q') == 1)
    member = sync_conn.zrange('rq:wip:q', 0, -1)[0].decode()
    rq.command.send_stop_execution_command(sync_conn, job.id, member.split(':')[1])
    await asyncio.wait_for(task, 10)
    assert await job.get_status() == JobStatus.STOPPED


async def test_more_bad_input_is_recorded_and_the_worker_keeps_serving(conn: Redis, sync_conn: redis.Redis) -> None:
    """A function name that is not callable, wrong types in hash fields, a hash without its
    ``data``, a gigantic argument: each ends recorded where rq records a failure (or, for the
    big argument, simply runs), and the jobs after them run."""
    q = Queue('q', connection=conn)
    not_callable = await q.enqueue('os.sep')
    bad_timeout = await q.enqueue(tasks.add, 1, 1)
    sync_conn.hset(RQJob.key_for(bad_timeout.id), 'timeout', 'soon')
    no_data = await q.enqueue(tasks.add, 1, 1)
    sync_conn.hdel(RQJob.key_for(no_data.id), 'data')
    big = await q.enqueue(tasks.echo, b'x' * (16 * 1024 * 1024))
    fine = await q.enqueue(tasks.add, 2, 2)
    await Worker('q', connection=conn, name='sturdy').work(burst=True)
    assert await fine.result == 4
    assert await big.get_status() == JobStatus.FINISHED
    for job in (not_callable, bad_timeout, no_data):
        assert sync_conn.hget(RQJob.key_for(job.id), 'status') == b'failed', job.id
        assert sync_conn.zscore('rq:failed:q', job.id) is not None, job.id
        assert sync_conn.xlen(f'rq:results:{job.id}') == 1, job.id
    last_lines = {}
    for job in (not_callable, bad_timeout, no_data):
        result = await job.latest_result()
        assert result is not None and result.exc_string
        last_lines[job.id] = result.exc_string.strip().splitlines()[-1]
    assert last_lines[not_callable.id] == "TypeError: 'str' object is not callable"
    assert last_lines[bad_timeout.id].startswith(f'Job {bad_timeout.id} could not be read')
    assert sync_conn.zcard('rq:wip:q') == 0
    assert sync_conn.llen('rq:queue:q') == 0


@pytest.mark.parametrize('command', ['stop-execution', 'stop-job'])
async def test_stop_command_that_races_the_claim(
    command: str, conn: Redis, sync_conn: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stop command sent once the job shows as started in Redis, but handled before the claim's
    reply has reached the worker, still stops the execution (it used to be ignored: the worker
    did not know the execution yet)."""
    from aiorq.protocol import dequeue

    job = await Queue('q', connection=conn).enqueue(tasks.async_sleep_for, 30)
    real_claim = dequeue.claim_executions
    sent: list[str] = []

    async def claim_then_stop(*args: Any, **kwargs: Any) -> Any:
        result = await real_claim(*args, **kwargs)
        if result[0] and not sent:
            member = sync_conn.zrange('rq:wip:q', 0, -1)[0].decode()
            if command == 'stop-execution':
                rq.command.send_stop_execution_command(sync_conn, job.id, member.split(':')[1])
            else:
                rq.command.send_stop_job_command(sync_conn, job.id)
            sent.append(member)
            await asyncio.sleep(0.5)  # the worker's command listener handles it meanwhile
        return result

    monkeypatch.setattr(dequeue, 'claim_executions', claim_then_stop)
    await asyncio.wait_for(Worker('q', connection=conn, name='racing-stopper').work(burst=True), 10)
    assert sent
    assert await job.get_status() == JobStatus.STOPPED
