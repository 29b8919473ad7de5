"""Redis out of memory (``maxmemory`` reached, ``maxmemory-policy noeviction``): Redis refuses
every command that may grow memory, and a whole transaction or script when its first write is
refused (a script that already wrote runs to its end).

The client: every kind of enqueue raises ``redis.exceptions.OutOfMemoryError`` naming
``maxmemory``, and leaves nothing of the job behind (no hash, no queue entry, no registry entry).
The worker: logs the refusal, keeps the outcomes of the jobs that finished meanwhile and writes
them once memory is freed, and loses no job; attempts are counted in a file, outside Redis.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
import redis
import rq
import tasks
from faultkit import Server, aiorq_worker, attempts, wait_for
from processes import Processes
from redis.exceptions import OutOfMemoryError
from rq.job import JobStatus
from rq.results import Result

import aiorq

QUEUE = 'starved'
JOBS = 10
STARVED = 3.0  # seconds without memory


def traces(conn: redis.Redis, job_id: str) -> list[str]:
    """Every key or registry entry that mentions ``job_id``."""
    found = [k.decode() for k in conn.scan_iter(f'*{job_id}*')]
    for key in conn.scan_iter('rq:*'):
        kind = conn.type(key)
        if kind == b'list' and conn.lpos(key, job_id) is not None:
            found.append(key.decode())
        elif kind == b'zset' and conn.zscore(key, job_id) is not None:
            found.append(key.decode())
        elif kind == b'set' and conn.sismember(key, job_id):
            found.append(key.decode())
    return found


async def refused_enqueues(url: str) -> list[str]:
    """Each kind of enqueue while Redis is out of memory; returns the ids tried."""
    client = aiorq.from_url(url)
    q = aiorq.Queue(QUEUE, connection=client)
    tried = []
    try:
        attempts_ = [
            ('oom-plain', q.enqueue(tasks.add, 1, 2, job_id='oom-plain')),
            ('oom-dependent', q.enqueue(tasks.add, 1, 2, job_id='oom-dependent', depends_on='oom-parent')),
            ('oom-scheduled', q.enqueue_in(timedelta(seconds=30), tasks.add, 1, 2, job_id='oom-scheduled')),
            ('oom-many', q.enqueue_many([aiorq.Queue.prepare_data(tasks.add, (1, 2), job_id='oom-many')])),
        ]
        for job_id, call in attempts_:
            tried.append(job_id)
            with pytest.raises(OutOfMemoryError, match='maxmemory'):
                await call
    finally:
        await client.aclose()
    return tried


def test_out_of_memory_refuses_enqueues_whole_and_loses_no_outcome(
    tmp_path: Path, fault_redis: Callable[..., Server], processes: Processes
) -> None:
    server = fault_redis()
    conn = server.client()
    worker = processes.start(
        'worker',
        aiorq_worker(server.url(), '--concurrency', '4', '--job-monitoring-interval', '1', '--name', 'starved', QUEUE),
    )
    # An idle worker on a queue of its own, whose blocking pop times out every second
    # (--worker-ttl 16): each time round it writes its state, and meets the refusal there.
    idler = processes.start(
        'idler', aiorq_worker(server.url(), '--worker-ttl', '16', '--name', 'idler', f'{QUEUE}-idle')
    )
    for name in ('starved', 'idler'):
        wait_for(lambda n=name: conn.hget(f'rq:worker:{n}', 'state') == b'idle', 20, processes.logs)
    path = tmp_path / 'attempts'
    q = rq.Queue(QUEUE, connection=conn)
    parent = q.enqueue(tasks.add, 0, 0, job_id='oom-parent', at_front=True)
    ids = [
        j.id
        for j in q.enqueue_many([rq.Queue.prepare_data(tasks.attempt_sleep, (str(path), 1000)) for _ in range(JOBS)])
    ]
    wait_for(lambda: len(attempts(path)) >= 4, 20, lambda: processes.log(worker))
    assert parent.get_status(refresh=True) == JobStatus.FINISHED

    # Starve Redis: any write that may grow memory is refused from now on.
    conn.config_set('maxmemory-policy', 'noeviction')
    conn.config_set('maxmemory', 1)
    starved = time.monotonic()
    for job_id in asyncio.run(refused_enqueues(server.url())):
        assert traces(conn, job_id) == [], job_id
    # The running jobs end meanwhile; their outcomes are refused and kept by the worker.
    time.sleep(max(0.0, STARVED - (time.monotonic() - starved)))
    assert worker.poll() is None and idler.poll() is None, processes.logs()
    assert 'maxmemory' in processes.log(worker, tail=100_000)
    assert 'out of memory' in processes.log(idler, tail=100_000)
    conn.config_set('maxmemory', 0)
    freed = time.monotonic()

    def finished() -> bool:
        return all(rq.job.Job.fetch(i, connection=conn).get_status() == JobStatus.FINISHED for i in ids)

    wait_for(finished, 60, lambda: processes.log(worker))
    recovered = time.monotonic() - freed
    assert attempts(path) == {i: 1 for i in ids}
    for job in rq.job.Job.fetch_many(ids, connection=conn):
        assert job is not None
        assert [r.type for r in job.results()] == [Result.Type.SUCCESSFUL]
    assert conn.zcard(f'rq:wip:{QUEUE}') == 0
    assert int(conn.hget('rq:worker:starved', 'successful_job_count') or 0) == JOBS + 1

    # Still serving.
    for queue in (q, rq.Queue(f'{QUEUE}-idle', connection=conn)):
        late = queue.enqueue(tasks.add, 20, 22)
        wait_for(lambda j=late: j.get_status(refresh=True) == JobStatus.FINISHED, 20, processes.logs)
    print(f'\nout of memory for {STARVED:.0f}s: {JOBS} jobs, 0 lost; all done {recovered:.1f}s after memory was freed')
