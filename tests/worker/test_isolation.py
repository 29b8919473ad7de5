"""What a job cannot do to the worker: end it, stall it, or take other jobs' outcomes with it.

Each test runs a real worker (a process where signals or the process's exit matter) against a
real Redis, and reads the outcome back with stock rq.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import hostile_tasks
import pytest
import redis
import rq
import tasks
from processes import Processes
from redis.asyncio import Redis
from redis_server import RedisServer
from rq.job import Job as RQJob
from rq.job import JobStatus, Retry
from waiting import wait_for

import aiorq
from aiorq import Queue
from aiorq_worker import Worker, watchdog

QUEUE = 'hostile'


def aiorq_worker(url: str, *options: str) -> list[str]:
    return [sys.executable, '-m', 'aiorq_worker', 'worker', '--url', url, *options]


def wait_until(predicate: Callable[[], object], timeout: float, why: Callable[[], str] = lambda: '') -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f'condition not met in {timeout}s\n{why()}')


def status(conn: redis.Redis, job: RQJob) -> str | None:
    raw = conn.hget(f'rq:job:{job.id}', 'status')
    return raw.decode() if raw else None


def start_worker(
    processes: Processes, url: str, conn: redis.Redis, name: str, *options: str
) -> subprocess.Popen[bytes]:
    proc = processes.start(name, aiorq_worker(url, '--name', name, *options, QUEUE))
    wait_until(lambda: conn.hget(f'rq:worker:{name}', 'state') is not None, 30, lambda: processes.log(proc))
    return proc


def test_exits_and_interrupts_raised_by_jobs_fail_only_those_jobs(
    redis_url: str, sync_conn: redis.Redis, processes: Processes
) -> None:
    proc = start_worker(processes, redis_url, sync_conn, 'iso', '--concurrency', '8')
    q = rq.Queue(QUEUE, connection=sync_conn)
    innocent = [q.enqueue(tasks.async_sleep_for, 1.5) for _ in range(2)]
    innocent += [q.enqueue(tasks.sleep_for, 1.5) for _ in range(2)]
    wait_until(lambda: sync_conn.zcard(f'rq:wip:{QUEUE}') == 4, 20, lambda: processes.log(proc))
    hostile = {
        'SystemExit: 3': q.enqueue(hostile_tasks.exit_in_thread, 3),
        'KeyboardInterrupt': q.enqueue(hostile_tasks.interrupt_in_thread),
        'SystemExit: 4': q.enqueue(hostile_tasks.exit_in_coroutine),
        'KeyboardInterrupt ': q.enqueue(hostile_tasks.interrupt_in_coroutine),
    }
    everything = [*innocent, *hostile.values()]
    wait_until(
        lambda: all(status(sync_conn, j) in ('finished', 'failed') for j in everything),
        30,
        lambda: processes.log(proc),
    )
    assert [status(sync_conn, j) for j in innocent] == ['finished'] * 4
    for raised, job in hostile.items():
        job.refresh()
        assert job.get_status() == JobStatus.FAILED
        result = job.latest_result()
        assert result is not None and result.exc_string is not None
        assert result.exc_string.rstrip().splitlines()[-1].startswith(raised.strip()), result.exc_string
    # Still serving: a later job runs, and the worker stops only when told.
    late = q.enqueue(tasks.add, 20, 22)
    wait_until(lambda: status(sync_conn, late) == 'finished', 20, lambda: processes.log(proc))
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    assert int(sync_conn.hget('rq:worker:iso', 'failed_job_count') or 0) == 4


@pytest.mark.skipif(sys.version_info < (3, 11), reason='Task.cancelling() tells a job\'s own CancelledError apart')
async def test_a_cancelled_error_raised_by_a_job_is_its_failure(conn: Redis) -> None:
    q = Queue(QUEUE, connection=conn)
    job = await q.enqueue(hostile_tasks.raise_cancelled)
    other = await q.enqueue(tasks.async_add, 1, 2)
    await asyncio.wait_for(Worker(QUEUE, connection=conn, name='self-cancel').work(burst=True), 30)
    assert await job.get_status() == JobStatus.FAILED
    result = await job.latest_result()
    assert result is not None and 'CancelledError' in (result.exc_string or '')
    assert await other.result == 3


def test_a_job_holding_the_loop_is_stopped_at_its_time_limit(
    redis_url: str, sync_conn: redis.Redis, processes: Processes
) -> None:
    proc = start_worker(processes, redis_url, sync_conn, 'held', '--concurrency', '4', '--job-monitoring-interval', '1')
    q = rq.Queue(QUEUE, connection=sync_conn)
    began = time.monotonic()
    spinner = q.enqueue(hostile_tasks.spin_forever, job_timeout=2)
    sleeper = q.enqueue(hostile_tasks.sleep_on_loop, 30, job_timeout=2)
    neighbours = [q.enqueue(tasks.async_sleep_for, 0.2) for _ in range(3)]
    wait_until(
        lambda: all(status(sync_conn, j) in ('finished', 'failed') for j in [spinner, sleeper, *neighbours]),
        25,
        lambda: processes.log(proc),
    )
    # Each held the loop for its 2 s limit (one after the other), not 30 s or forever.
    assert time.monotonic() - began < 25
    for job in (spinner, sleeper):
        assert status(sync_conn, job) == 'failed'
        result = job.latest_result()
        assert result is not None and result.exc_string is not None
        assert 'JobTimeoutException: Task exceeded maximum timeout value (2 seconds)' in result.exc_string
    assert [status(sync_conn, j) for j in neighbours] == ['finished'] * 3
    log = processes.log(proc, tail=100_000)
    assert f'job {spinner.id} ({QUEUE}) held the event loop for' in log
    assert f'job {sleeper.id} ({QUEUE}) held the event loop for' in log
    # Signals reach the worker again: a warm shutdown ends it.
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0


async def test_a_loop_held_past_every_limit_stops_the_heartbeats(
    conn: Redis, sync_conn: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job swallows the interrupts: once its limit and the grace have passed, the worker's
    executions are no longer kept alive (so maintenance elsewhere would recover them); when the
    loop turns again, heartbeats resume. Observed from a thread, since the loop is held."""
    monkeypatch.setattr(watchdog, 'STALL_GRACE', 1.5)
    q = Queue(QUEUE, connection=conn)
    job = await q.enqueue(hostile_tasks.spin_ignoring_timeouts, 6.5, job_timeout=1)
    worker = Worker(QUEUE, connection=conn, name='stalled', job_monitoring_interval=1)
    samples: list[tuple[float, bytes | None]] = []
    stop = threading.Event()
    watcher = redis.Redis(connection_pool=sync_conn.connection_pool)

    def sample() -> None:
        while not stop.wait(0.25):
            samples.append((time.monotonic(), watcher.hget('rq:worker:stalled', 'last_heartbeat')))

    sampler = threading.Thread(target=sample)
    sampler.start()
    began = time.monotonic()
    task = asyncio.ensure_future(worker.work())
    try:
        await wait_for(lambda: time.monotonic() - began > 8.5, 20)  # checked only when the loop turns
        worker.request_stop()
        await asyncio.wait_for(task, 20)
    finally:
        stop.set()
        sampler.join()
    at = [(t - began, score) for t, score in samples]
    # Held from about 0.1 s on; limit 1 s + grace 1.5 s: no beat from ~2.6 s until the spin ends at ~6.6 s.
    frozen = [beat for t, beat in at if 3.2 <= t <= 6.2]
    assert len(frozen) >= 8 and len(set(frozen)) == 1, at
    beats_before = {beat for t, beat in at if t <= 2.4 and beat is not None}
    assert len(beats_before) >= 2, at  # it did beat (every second) while within its limit
    beats_after = {beat for t, beat in at if t >= 6.6}
    assert beats_after - set(frozen), at  # and beats again once the loop turns
    assert await job.get_status() == JobStatus.FAILED
    result = await job.latest_result()
    assert result is not None and 'JobTimeoutException' in (result.exc_string or '')


async def test_a_result_redis_cannot_hold_fails_only_its_job() -> None:
    server = RedisServer()
    try:
        admin = redis.Redis.from_url(server.url(0))
        admin.config_set('proto-max-bulk-len', '1mb')  # the smallest Redis allows
        conn = Redis.from_url(server.url(0))
        q = Queue(QUEUE, connection=conn)
        big = await q.enqueue(hostile_tasks.big_result, 1_500_000)
        innocent = [await q.enqueue(tasks.async_add, i, 1) for i in range(15)]
        worker = Worker(QUEUE, connection=conn, name='big', concurrency=16)
        await asyncio.wait_for(worker.work(burst=True), 60)
        assert [await j.get_status() for j in innocent] == [JobStatus.FINISHED] * 15
        assert [await j.result for j in innocent] == [i + 1 for i in range(15)]
        assert await big.get_status() == JobStatus.FAILED
        result = await big.latest_result()
        assert result is not None and result.exc_string is not None
        assert 'ResultTooLargeError' in result.exc_string and 'proto-max-bulk-len' in result.exc_string
        assert admin.zcard(f'rq:wip:{QUEUE}') == 0
        assert rq.Queue(QUEUE, connection=admin).failed_job_registry.get_job_ids() == [big.id]
        await conn.aclose()
        admin.close()
    finally:
        server.stop()


def test_max_idle_time_counts_from_the_last_job(redis_url: str, sync_conn: redis.Redis, processes: Processes) -> None:
    proc = start_worker(processes, redis_url, sync_conn, 'idler', '--max-idle-time', '3')
    job = rq.Queue(QUEUE, connection=sync_conn).enqueue(tasks.async_sleep_for, 1.5)
    wait_until(lambda: status(sync_conn, job) == 'finished', 20, lambda: processes.log(proc))
    ended = time.monotonic()
    assert proc.wait(15) == 0
    assert 2.5 <= time.monotonic() - ended <= 10


@pytest.mark.parametrize('mode', ['coroutine', 'thread'])
def test_a_second_signal_is_a_cold_shutdown_however_soon(
    redis_url: str, sync_conn: redis.Redis, processes: Processes, mode: str
) -> None:
    proc = start_worker(processes, redis_url, sync_conn, f'cold-{mode}')
    q = rq.Queue(QUEUE, connection=sync_conn)
    func = tasks.async_sleep_for if mode == 'coroutine' else tasks.sleep_for
    job = q.enqueue(func, 30, retry=Retry(max=1))
    wait_until(lambda: status(sync_conn, job) == 'started', 20, lambda: processes.log(proc))
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    began = time.monotonic()
    proc.wait(10)
    assert time.monotonic() - began < 8, processes.log(proc)
    if mode == 'coroutine':
        # The task was cancelled: recorded at once as rq records a killed horse (its retry queued).
        job.refresh()
        assert job.retries_left == 0
        assert job.get_status() == JobStatus.QUEUED
        assert sync_conn.lrange(f'rq:queue:{QUEUE}', 0, -1) == [job.id.encode()]
    else:
        # The thread could not be stopped: nothing was requeued while it ran; the job is left
        # started, for maintenance to fail (and retry) as abandoned once its heartbeats stop.
        assert status(sync_conn, job) == 'started'
        assert sync_conn.llen(f'rq:queue:{QUEUE}') == 0
        assert sync_conn.zcard(f'rq:wip:{QUEUE}') == 1


def test_signals_reach_a_worker_whose_loop_a_job_holds_without_limit(
    redis_url: str, sync_conn: redis.Redis, processes: Processes
) -> None:
    """No time limit will free the loop: SIGINT then SIGTERM still make a cold shutdown."""
    proc = start_worker(processes, redis_url, sync_conn, 'deaf', '--concurrency', '2')
    q = rq.Queue(QUEUE, connection=sync_conn)
    job = q.enqueue(hostile_tasks.spin_forever, job_timeout=-1)
    wait_until(lambda: status(sync_conn, job) == 'started', 20, lambda: processes.log(proc))
    time.sleep(1)  # held by now
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    assert proc.poll() is None  # the first signal is a warm shutdown: it waits for the job
    proc.send_signal(signal.SIGTERM)
    proc.wait(15)
    assert status(sync_conn, job) == 'failed', processes.log(proc)
    result = job.latest_result()
    assert result is not None and 'cold shutdown of worker deaf' in (result.exc_string or '')
    assert sync_conn.zcard(f'rq:wip:{QUEUE}') == 0
    assert rq.Worker.all(connection=sync_conn) == []  # its death registered, as rq reads it
    assert sync_conn.hget('rq:worker:deaf', 'death')


async def test_a_retry_never_runs_beside_the_thread_it_retries(conn: Redis, tmp_path: Path) -> None:
    spans = tmp_path / 'spans'
    q = Queue(QUEUE, connection=conn)
    job = await q.enqueue(hostile_tasks.note_span, str(spans), 2, job_timeout=1, retry=Retry(max=1))
    await asyncio.wait_for(Worker(QUEUE, connection=conn, name='retrier', concurrency=2).work(burst=True), 30)
    # The last attempt's thread outlives the burst (nothing follows it): wait for its end too.
    await wait_for(lambda: spans.read_text().count('end') == 2, 10)
    lines = [line.split() for line in spans.read_text().splitlines()]
    assert [kind for kind, _ in lines] == ['start', 'end', 'start', 'end'], lines
    assert float(lines[2][1]) >= float(lines[1][1])  # the retry started after the first attempt ended
    assert await job.get_status() == JobStatus.FAILED
    result = await job.latest_result()
    assert result is not None and 'JobTimeoutException' in (result.exc_string or '')


async def test_plain_jobs_use_every_slot(conn: Redis, sync_conn: redis.Redis) -> None:
    """Two plain jobs hold two of four slots; the other two slots keep serving quick jobs (a
    running plain job counts once against the concurrency, not for its execution and its thread)."""
    q = Queue(QUEUE, connection=conn)
    held = [await q.enqueue(hostile_tasks.hold_until_released) for _ in range(2)]
    quick = [await q.enqueue(tasks.add, i, 1) for i in range(6)]
    worker = Worker(QUEUE, connection=conn, name='plain', concurrency=4)
    task = asyncio.ensure_future(worker.work(burst=True))
    try:
        await wait_for(lambda: all_finished(quick), 20)
        assert [await j.get_status() for j in held] == [JobStatus.STARTED] * 2
    finally:
        sync_conn.set('release', 1)
        await asyncio.wait_for(task, 20)
    assert [await j.get_status() for j in held] == [JobStatus.FINISHED] * 2


async def all_finished(jobs: list[aiorq.Job]) -> bool:
    return all([await j.get_status() == JobStatus.FINISHED for j in jobs])


async def test_a_result_over_a_megabyte_is_stored_where_redis_takes_it(conn: Redis) -> None:
    """Results over the least limit any Redis has make the worker ask this one (512 MB by default)."""
    q = Queue(QUEUE, connection=conn)
    big = await q.enqueue(hostile_tasks.big_result, 1_500_000)
    await asyncio.wait_for(Worker(QUEUE, connection=conn, name='roomy').work(burst=True), 30)
    assert await big.get_status() == JobStatus.FINISHED
    assert len(await big.result) == 1_500_000


async def test_a_held_loop_is_counted_by_job_in_the_metrics(conn: Redis) -> None:
    pytest.importorskip('prometheus_client')
    q = Queue(QUEUE, connection=conn)
    held = await q.enqueue(hostile_tasks.sleep_on_loop, 1.5)  # within its limit: it finishes
    worker = Worker(QUEUE, connection=conn, name='metered', metrics_port=0)
    task = asyncio.ensure_future(worker.work())
    try:
        await wait_for(lambda: is_finished(held), 20)
        await wait_for(lambda: asyncio.to_thread(sample, worker, 'aiorq_loop_blocked_seconds_count'), 10)
        assert await asyncio.to_thread(sample, worker, 'aiorq_loop_blocked_seconds_count') == 1
        seconds = await asyncio.to_thread(sample, worker, 'aiorq_loop_blocked_seconds_sum')
        assert seconds is not None and 1.3 <= seconds < 5
        assert await held.get_status() == JobStatus.FINISHED
    finally:
        worker.request_stop()
        await asyncio.wait_for(task, 20)


async def is_finished(job: aiorq.Job) -> bool:
    return await job.get_status() == JobStatus.FINISHED


def sample(worker: Worker, name: str) -> float | None:
    assert worker.metrics is not None
    labels = {'queue': QUEUE, 'function': 'hostile_tasks.sleep_on_loop'}
    return worker.metrics.registry.get_sample_value(name, labels)  # type: ignore[no-any-return]


async def test_a_plain_job_raising_stop_iteration_fails_and_the_others_go_on(conn: Redis) -> None:
    """``StopIteration`` cannot be set on an asyncio future: the thread's outcome still reaches
    the job (recorded as its failure), and the outcomes handed back with it are not lost."""
    q = Queue(QUEUE, connection=conn)
    stopped = await q.enqueue(next, iter([]))
    quick = [await q.enqueue(tasks.add, i, 1) for i in range(4)]
    await asyncio.wait_for(Worker(QUEUE, connection=conn, name='stopper', concurrency=5).work(burst=True), 30)
    assert await stopped.get_status() == JobStatus.FAILED
    result = await stopped.latest_result()
    assert result is not None and 'StopIteration' in (result.exc_string or '')
    assert [await j.get_status() for j in quick] == [JobStatus.FINISHED] * 4
