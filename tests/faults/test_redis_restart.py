"""Redis restarted under a busy ``aiorq worker`` (rq-protocol §6.2, §4.7–4.12).

With persistence (append-only file, ``appendfsync always``: every acknowledged write survives even
SIGKILL) the worker must come back by itself: reconnect with backoff, load its scripts again (the
script cache does not survive a restart), write every outcome it was holding, keep its worker
record, and keep serving. Every job finishes exactly once, and a job's retries are spent only by
its own failed attempts, never by the outage.

Without persistence everything in Redis is gone; the worker must notice that its record vanished,
register again, and serve the jobs enqueued afterwards.

Attempts are counted outside Redis (``tasks.attempt_then_record`` appends its job id to a file
before it touches Redis), so the count cannot be lost with the server.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import rq
import tasks
from faultkit import Server, aiorq_worker, attempts, wait_for
from processes import Processes
from rq.job import Job as RQJob
from rq.job import JobStatus
from rq.results import Result
from rq.worker import Worker as RQWorker

QUEUE = 'restart'
JOBS = 300
RETRIES = 3
JOB_MS = 150  # 300 jobs x 150 ms / 20 slots: the outage lands mid-run
DOWN = 3.0  # seconds Redis stays down


def statuses(conn: object, ids: list[str]) -> Counter[str]:
    with conn.pipeline(transaction=False) as pipe:  # type: ignore[attr-defined]
        for job_id in ids:
            pipe.hget(f'rq:job:{job_id}', 'status')
        return Counter('missing' if s is None else s.decode() for s in pipe.execute())


def test_worker_rides_out_a_redis_restart_with_aof(
    tmp_path: Path, fault_redis: Callable[..., Server], processes: Processes
) -> None:
    server = fault_redis(aof=True)
    conn = server.client()
    worker = processes.start('worker', aiorq_worker(server.url(), '--concurrency', '20', '--name', 'rider', QUEUE))
    wait_for(lambda: conn.hget('rq:worker:rider', 'state') == b'idle', 20, lambda: processes.log(worker))
    birth = conn.hget('rq:worker:rider', 'birth')

    path = tmp_path / 'attempts'
    q = rq.Queue(QUEUE, connection=conn)
    jobs = q.enqueue_many(
        [
            rq.Queue.prepare_data(tasks.attempt_then_record, (str(path), JOB_MS), retry=rq.Retry(max=RETRIES))
            for _ in range(JOBS)
        ]
    )
    ids = [j.id for j in jobs]

    # Kill Redis (SIGKILL) a third of the way through, with 20 jobs in flight.
    wait_for(lambda: conn.llen('ran') >= JOBS // 3, 30, lambda: processes.log(worker))
    in_flight = conn.zcard(f'rq:wip:{QUEUE}')
    conn.close()
    server.kill(signal.SIGKILL)
    killed = time.monotonic()
    time.sleep(DOWN)
    server.start()
    restarted = time.monotonic()
    conn = server.client()
    done_before = len(conn.zrange(f'rq:finished:{QUEUE}', 0, -1))

    def progressed() -> bool:
        return conn.zcard(f'rq:finished:{QUEUE}') > done_before

    wait_for(progressed, 60, lambda: processes.log(worker))
    first_finish = time.monotonic() - restarted

    def all_terminal() -> bool:
        return not set(statuses(conn, ids)) & {'queued', 'started', 'scheduled'}

    wait_for(all_terminal, 90, lambda: f'{statuses(conn, ids)}\n{processes.log(worker)}')
    recovered = time.monotonic() - restarted
    assert worker.poll() is None, processes.log(worker)

    # Every job finished, with exactly one successful Result; every failed attempt (the jobs in
    # flight lost their own RPUSH to the outage) spent exactly one retry, and no more.
    assert statuses(conn, ids) == {'finished': JOBS}, processes.log(worker)
    tried = attempts(path)
    ran = Counter(x.decode() for x in conn.lrange('ran', 0, -1))
    fetched = RQJob.fetch_many(ids, connection=conn)
    spent = {}
    for job in fetched:
        assert job is not None
        results = job.results()
        assert [r.type for r in results] == [Result.Type.SUCCESSFUL], (job.id, results)
        spent[job.id] = RETRIES - (job.retries_left or 0)
        assert 1 <= ran[job.id] <= tried[job.id], (job.id, ran[job.id], tried[job.id])
    assert {i: tried[i] - 1 for i in ids} == spent, processes.log(worker)
    failed_attempts = sum(tried.values()) - JOBS
    assert failed_attempts >= 1  # the outage did fail jobs in flight: the test saw the fault

    # Nothing left in flight; the record is the same worker's, with counters that add up.
    assert conn.zcard(f'rq:wip:{QUEUE}') == 0
    assert conn.llen(f'rq:queue:{QUEUE}:intermediate') == 0
    assert conn.zcard(f'rq:failed:{QUEUE}') == 0
    assert sorted(x.decode() for x in conn.zrange(f'rq:finished:{QUEUE}', 0, -1)) == sorted(ids)
    record = conn.hgetall('rq:worker:rider')
    assert record[b'birth'] == birth
    assert int(record[b'pid']) == worker.pid
    assert int(record[b'successful_job_count']) == JOBS
    assert int(record[b'failed_job_count']) == failed_attempts
    assert [w.name for w in RQWorker.all(connection=conn)] == ['rider']

    # Still serving, and still listening for commands.
    late = rq.Queue(QUEUE, connection=conn).enqueue(tasks.add, 20, 22)
    wait_for(lambda: late.get_status(refresh=True) == JobStatus.FINISHED, 20, lambda: processes.log(worker))
    # The restarted server knew no script: the worker met NOSCRIPT and loaded its own again.
    assert 'errorstat_NOSCRIPT' in conn.info('errorstats')
    # Commands are fire-and-forget: wait until the worker has subscribed again.
    wait_for(lambda: conn.pubsub_numsub('rq:pubsub:rider') == [(b'rq:pubsub:rider', 1)], 30, 'resubscribed')
    rq.command.send_shutdown_command(conn, 'rider')
    assert worker.wait(20) == 0, processes.log(worker)
    print(
        f'\nAOF restart: {in_flight} jobs in flight, {failed_attempts} failed attempts retried, 0 lost; '
        f'down {restarted - killed:.1f}s; first finish {first_finish:.1f}s and all {JOBS} jobs done '
        f'{recovered:.1f}s after the restart'
    )


def test_worker_registers_again_when_redis_restarts_empty(
    tmp_path: Path, fault_redis: Callable[..., Server], processes: Processes
) -> None:
    """No persistence: the restarted server is empty. The worker notices its record is gone at
    its next heartbeat, registers again (record and worker sets, same birth, same pid) and
    serves new jobs. The jobs in flight during the restart still run to their end in the worker,
    but their outcomes have nowhere to go: nothing of them is recreated."""
    server = fault_redis(aof=False)
    conn = server.client()
    interval = 2  # --job-monitoring-interval: an idle worker beats every 2 s
    worker = processes.start(
        'worker', aiorq_worker(server.url(), '--job-monitoring-interval', str(interval), '--name', 'phoenix', QUEUE)
    )
    wait_for(lambda: conn.hget('rq:worker:phoenix', 'state') == b'idle', 20, lambda: processes.log(worker))
    birth = conn.hget('rq:worker:phoenix', 'birth')
    q = rq.Queue(QUEUE, connection=conn)
    path = tmp_path / 'attempts'
    in_flight = [q.enqueue(tasks.attempt_sleep, str(path), 2500).id for _ in range(2)]
    wait_for(lambda: len(attempts(path)) == 2, 20, lambda: processes.log(worker))
    ending = time.monotonic() + 2.5  # when those two end (their outcome writes follow)

    conn.close()
    server.kill(signal.SIGKILL)
    server.start()
    restarted = time.monotonic()
    conn = server.client()

    def registered() -> bool:
        key = 'rq:worker:phoenix'
        return bool(conn.sismember('rq:workers', key) and conn.sismember(f'rq:workers:{QUEUE}', key))

    wait_for(registered, interval + 10, lambda: processes.log(worker))
    rejoined = time.monotonic() - restarted
    record = conn.hgetall('rq:worker:phoenix')
    assert record[b'birth'] == birth
    assert int(record[b'pid']) == worker.pid
    assert record[b'queues'] == QUEUE.encode()
    assert [(w.name, w.state) for w in RQWorker.all(connection=conn)] == [('phoenix', 'idle')]

    # Serving again: new jobs, from both clients' point of view, each run once.
    q = rq.Queue(QUEUE, connection=conn)
    ids = [j.id for j in q.enqueue_many([rq.Queue.prepare_data(tasks.record_add, (i, 1)) for i in range(10)])]
    wait_for(lambda: statuses(conn, ids) == {'finished': 10}, 20, lambda: processes.log(worker))
    served = time.monotonic() - restarted
    assert Counter(x.decode() for x in conn.lrange('ran', 0, -1)) == {i: 1 for i in ids}

    # The jobs in flight ran once, to their end, and left nothing behind in the empty server.
    time.sleep(max(0.0, ending + 1.0 - time.monotonic()))
    assert attempts(path) == {i: 1 for i in in_flight}
    assert statuses(conn, in_flight) == {'missing': 2}
    assert conn.zcard(f'rq:wip:{QUEUE}') == 0
    assert conn.zcard(f'rq:finished:{QUEUE}') == 10
    assert conn.scard('rq:worker:phoenix:executions') == 0

    wait_for(lambda: conn.pubsub_numsub('rq:pubsub:phoenix') == [(b'rq:pubsub:phoenix', 1)], 30, 'resubscribed')
    rq.command.send_shutdown_command(conn, 'phoenix')
    assert worker.wait(20) == 0, processes.log(worker)
    assert 'registered again' in processes.log(worker)
    print(
        f'\nempty restart: 2 jobs in flight (their outcomes lost with the data); registered again '
        f'{rejoined:.1f}s and 10 new jobs done {served:.1f}s after the restart'
    )
