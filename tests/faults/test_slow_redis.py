"""A slow Redis and a blocked event loop: heartbeats keep coming, and no live job is declared
abandoned by another worker's maintenance (rq-protocol §4.8, §4.17, trap 24); and a Redis slower
than the clients' timeout loses and doubles nothing.

Worker ``busy`` (``--job-monitoring-interval 1``: a heartbeat every second, deadlines 61 s ahead)
runs long coroutines and long plain functions, plus two coroutines that block its event loop by
mistake: one calls ``time.sleep``, one spins. Worker ``janitor`` runs maintenance every second on
the same queue. A deadline 61 s ahead would outlast any blockage here, so the test steers time
instead: as a blockage starts it moves every running execution's deadline to 3 s ahead. Only a
heartbeat sent during the blockage can move it back before the janitor's maintenance finds it
past; a planted execution that nobody beats for ("ghost") shows the janitor did look meanwhile.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
import rq
import tasks
from faultkit import Server, aiorq_worker, attempts, wait_for
from processes import Processes
from rq.job import Job as RQJob
from rq.job import JobStatus
from rq.results import Result

QUEUE = 'slow'
PROBE = 'probe'  # only the busy worker listens here: a job on it shows whether its loop runs
LONG = 17.0  # seconds the long jobs run: through every blockage below
BLOCK = 4.0  # seconds each blocker holds the loop


def wip(conn: redis.Redis) -> dict[str, float]:
    return {m.decode(): s for m, s in conn.zrange(f'rq:wip:{QUEUE}', 0, -1, withscores=True)}


def plant_ghost(conn: redis.Redis, due_in: int) -> str:
    """A started job whose execution nobody refreshes, due ``due_in`` seconds from now."""
    ghost = RQJob.create(tasks.add, args=(1, 2), connection=conn, origin=QUEUE, status=JobStatus.STARTED)
    ghost.save()
    conn.zadd(f'rq:wip:{QUEUE}', {f'{ghost.id}:ghost': int(time.time()) + due_in})
    return ghost.id


def ride_out_blockage(conn: redis.Redis, members: list[str], seconds: float) -> tuple[int, list[dict[str, float]]]:
    """Steer the executions' deadlines to 3 s ahead, then sample them for ``seconds``. Returns
    the steered deadline and the samples (four a second)."""
    steered = int(time.time()) + 3
    conn.zadd(f'rq:wip:{QUEUE}', {m: steered for m in members}, xx=True)
    samples = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        samples.append({m: s for m, s in wip(conn).items() if m in members})
        time.sleep(0.25)
    return steered, samples


def assert_kept_ahead(steered: int, samples: list[dict[str, float]], members: list[str], what: str) -> float:
    """Every deadline went back to a minute ahead within 1.5 s of the steering and kept moving
    forward: one more heartbeat at least before the sampling ended. Returns when (seconds after
    the steering, to the sampling's 0.25 s) all of them were back."""
    for m in members:
        scores = [s[m] for s in samples]
        assert all(b >= a for a, b in zip(scores, scores[1:])), (what, m, scores)
        assert scores[6] >= steered + 50, (what, m, steered, scores)
        assert scores[-1] >= scores[6] + 1, (what, m, scores)
    back = next(n for n, s in enumerate(samples) if all(s[m] >= steered + 50 for m in members))
    return back * 0.25


def test_heartbeats_outlast_a_blocked_loop_and_a_sleeping_redis(
    fault_redis: Callable[..., Server], processes: Processes
) -> None:
    server = fault_redis()
    conn = server.client()
    busy = processes.start(
        'busy',
        aiorq_worker(
            server.url(), '--job-monitoring-interval', '1', '--concurrency', '8', '--name', 'busy', QUEUE, PROBE
        ),
    )
    wait_for(lambda: conn.hget('rq:worker:busy', 'state') == b'idle', 20, lambda: processes.log(busy))
    q = rq.Queue(QUEUE, connection=conn)
    long = [q.enqueue(tasks.async_sleep_for, LONG) for _ in range(2)]
    long += [q.enqueue(tasks.sleep_for, LONG) for _ in range(2)]
    jobs = [*long, q.enqueue(tasks.block_loop_on_signal, BLOCK), q.enqueue(tasks.block_loop_on_signal, BLOCK, True)]
    wait_for(lambda: len(wip(conn)) == len(jobs), 20, lambda: processes.log(busy))
    members = [m for m in wip(conn) if m.split(':')[0] in {j.id for j in long}]
    janitor = processes.start(
        'janitor', aiorq_worker(server.url(), '--maintenance-interval', '1', '--name', 'janitor', QUEUE)
    )
    wait_for(lambda: conn.hget('rq:worker:janitor', 'state') == b'idle', 20, lambda: processes.log(janitor))

    refreshed: dict[str, float] = {}

    def blocked_by(what: str) -> str:
        """Start one blocker, plant a ghost, and sample while the loop is blocked; a job on the
        probe queue must not start before the blockage ends (the loop really was blocked)."""
        conn.delete('blocking')
        conn.rpush('block', 1)
        wait_for(lambda: conn.get('blocking'), 10, lambda: processes.log(busy))
        probe = rq.Queue(PROBE, connection=conn).enqueue(tasks.add, 2, 2)
        ghost = plant_ghost(conn, 2)
        steered, samples = ride_out_blockage(conn, members, BLOCK - 1)
        assert probe.get_status(refresh=True) == JobStatus.QUEUED, f'{what}: the loop was not blocked'
        refreshed[what] = assert_kept_ahead(steered, samples, members, what)
        wait_for(lambda: probe.get_status(refresh=True) == JobStatus.FINISHED, 10, lambda: processes.log(busy))
        return ghost

    ghost_sleep = blocked_by('time.sleep on the loop')

    # Redis itself stops for 3 s (every client waits, none times out): the heartbeats resume at
    # once afterwards, and nobody's deadline has passed.
    before = wip(conn)
    conn.execute_command('DEBUG', 'SLEEP', 3)
    woke = time.time()
    time.sleep(1.5)
    after = wip(conn)
    for m in members:
        assert after[m] >= woke + 59, (m, before[m], after[m], woke)

    ghost_spin = blocked_by('a busy loop on the loop')

    for ghost in (ghost_sleep, ghost_spin):
        # The janitor's maintenance ran during the blockages: it failed what nobody kept alive.
        wait_for(lambda g=ghost: conn.zscore(f'rq:failed:{QUEUE}', g) is not None, 10, lambda: processes.logs())
    wait_for(
        lambda: all(j.get_status(refresh=True) == JobStatus.FINISHED for j in jobs),
        LONG + 10,
        lambda: f'{[j.get_status() for j in jobs]}\n{processes.logs()}',
    )
    assert sorted(x.decode() for x in conn.zrange(f'rq:failed:{QUEUE}', 0, -1)) == sorted([ghost_sleep, ghost_spin])
    assert int(conn.hget('rq:worker:busy', 'failed_job_count') or 0) == 0
    assert conn.zcard(f'rq:wip:{QUEUE}') == 0
    assert 'heartbeat failed' not in processes.log(busy)
    print(
        f'\nblocked loop / DEBUG SLEEP 3: {len(members)} long jobs + 2 blockers in flight, 0 abandoned, 0 lost; '
        f'deadlines back a minute ahead within {refreshed} s of being steered to 3 s'
    )


def test_a_redis_slower_than_the_client_timeout(
    tmp_path: Path, fault_redis: Callable[..., Server], processes: Processes
) -> None:
    """Redis stops for longer than the clients' socket timeout (5 s) while jobs keep finishing:
    every call in flight times out, and the requests are still there when Redis wakes. Outcome
    writes retried meanwhile queue up behind their first attempt: that one applies, the retry
    must recognise it and apply nothing. Every job runs once and finishes once, and the worker's
    counters are exact."""
    server = fault_redis()
    conn = server.client()
    worker = processes.start(
        'worker',
        aiorq_worker(server.url(), '--concurrency', '4', '--job-monitoring-interval', '1', '--name', 'patient', QUEUE),
    )
    wait_for(lambda: conn.hget('rq:worker:patient', 'state') == b'idle', 20, lambda: processes.log(worker))
    path = tmp_path / 'attempts'
    q = rq.Queue(QUEUE, connection=conn)
    ids = [
        j.id for j in q.enqueue_many([rq.Queue.prepare_data(tasks.attempt_sleep, (str(path), 150)) for _ in range(60)])
    ]
    wait_for(lambda: len(attempts(path)) >= 8, 20, lambda: processes.log(worker))
    conn.execute_command('DEBUG', 'SLEEP', 7)
    woke = time.monotonic()
    wait_for(
        lambda: all(j.get_status(refresh=False) == JobStatus.FINISHED for j in RQJob.fetch_many(ids, connection=conn)),
        60,
        lambda: processes.log(worker),
    )
    recovered = time.monotonic() - woke
    assert 'Timeout' in processes.log(worker, tail=200_000)  # the sleep did outlast the client's patience
    assert attempts(path) == {i: 1 for i in ids}
    for job in RQJob.fetch_many(ids, connection=conn):
        assert job is not None
        assert [r.type for r in job.results()] == [Result.Type.SUCCESSFUL], job.id
    record = conn.hgetall('rq:worker:patient')
    assert int(record[b'successful_job_count']) == len(ids)
    assert int(record.get(b'failed_job_count', 0)) == 0
    assert conn.zcard(f'rq:wip:{QUEUE}') == 0
    assert conn.scard('rq:worker:patient:executions') == 0
    print(f'\nRedis asleep 7s: {len(ids)} jobs, 0 lost, none twice; all done {recovered:.1f}s after it woke')


async def test_blocking_pop_gives_up_on_a_silent_server(
    fault_redis: Callable[..., Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker's blocking pop runs without a socket timeout (a pop may block for minutes), but
    its reply is awaited only for the block plus a margin: a server that stops answering without
    closing the connection (frozen here with SIGSTOP) raises TimeoutError, which admission
    handles like any lost connection, instead of hanging the worker for good."""
    from redis.asyncio import Redis

    from aiorq.connections import blocking_client
    from aiorq.protocol import dequeue

    server = fault_redis()
    client = blocking_client(Redis.from_url(server.url()))
    assert await client.ping()  # the connection the pop will use is open
    monkeypatch.setattr(dequeue, 'POP_READ_MARGIN', 1.0)
    assert server.proc is not None
    server.proc.send_signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(redis.exceptions.TimeoutError):
            await dequeue.blocking_pop(client, ['q'], 1, True)
        assert 1.5 < time.monotonic() - started < 10
    finally:
        server.proc.send_signal(signal.SIGCONT)
    # The broken connection was dropped: the next pop works on a fresh one.
    assert await dequeue.blocking_pop(client, ['q'], 1, True) is None
    await client.aclose()
