"""A mixed fleet on one queue: two stock ``rq worker`` processes (one forking ``Worker``, one
``SimpleWorker``) and two ``aiorq worker --concurrency 8`` processes drain the same jobs, half of
them enqueued with stock rq and half with aiorq, plain and coroutine functions, some failing,
some chained through ``depends_on`` across the two clients.

Every job function pushes its own id onto the list ``ran`` (through ``rq.get_current_job()`` or
``aiorq.get_current_job()``), so the test can prove that each job ran exactly once.

All workers run maintenance every second (``--maintenance-interval 1``, and ``--worker-ttl 16`` so
that an idle worker's blocking pop times out after a second and reaches the maintenance check).
That is needed with stock rq 3.0 too: the release of a dependent (``ReadyJobRegistry.enqueue_jobs``,
rq-protocol §4.11 phase B) WATCHes ``rq:ready:<q>``, which every other release on the queue
modifies, and on a ``WatchError`` it concedes the job to the next maintenance pass (10 minutes by
default). Under this load a few dependents per run end up ``ready_to_enqueue`` that way, whichever
kind of worker finished their parent. One aiorq worker also contends with itself, much more than
with others: see ``test_one_worker_releases_every_dependent``.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest
import redis
import rq
import tasks
from processes import Processes
from redis.asyncio import Redis
from rq.command import send_shutdown_command
from rq.job import Job as RQJob
from rq.results import Result
from rq.worker import Worker as RQWorker

import aiorq

QUEUE = 'fleet'
SEED = 20240601
CHAINS = 110  # chains of 2 or 3 jobs, ~275 jobs
FAILING = 55  # standalone failing jobs (5%)
SINGLES = 720  # standalone successful jobs
DEADLINE = 120.0


@dataclass
class Spec:
    """One job to enqueue: what it runs, which client enqueues it, what it must produce."""

    func: Any
    args: tuple[Any, ...]
    expected: Any  # return value; None for failing jobs
    client: str = ''  # 'rq' or 'aiorq'
    parent: int | None = None  # index of the job this one depends on
    id: str = ''
    fails: bool = field(init=False)

    def __post_init__(self) -> None:
        self.fails = self.func is tasks.record_fail


# Shared by all four workers: see the module docstring.
MAINTENANCE = ['--maintenance-interval', '1', '--worker-ttl', '16']


def plan(rng: random.Random) -> list[Spec]:
    """Chains, failing singles and successful singles, shuffled as units; clients alternate per job."""

    def succeeding() -> Spec:
        kind = rng.randrange(3)
        if kind == 0:
            a, b = rng.randrange(1000), rng.randrange(1000)
            return Spec(tasks.record_add, (a, b), a + b)
        if kind == 1:
            a, b = rng.randrange(1000), rng.randrange(1000)
            return Spec(tasks.record_async_add, (a, b), a + b)
        ms = rng.randrange(1, 6)
        return Spec(tasks.record_sleep, (ms,), ms)

    units: list[list[Spec]] = []
    units += [[succeeding() for _ in range(rng.choice((2, 3)))] for _ in range(CHAINS)]
    units += [[Spec(tasks.record_fail, (f'planned failure {i}',), None)] for i in range(FAILING)]
    units += [[succeeding()] for _ in range(SINGLES)]
    rng.shuffle(units)
    specs: list[Spec] = []
    for unit in units:
        for position, spec in enumerate(unit):
            if position:
                spec.parent = len(specs) - 1
            spec.client = 'rq' if len(specs) % 2 == 0 else 'aiorq'
            specs.append(spec)
    return specs


def statuses(conn: redis.Redis, ids: list[str]) -> list[str | None]:
    with conn.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.hget(f'rq:job:{job_id}', 'status')
        return [None if s is None else s.decode() for s in pipe.execute()]


def parse(stamp: bytes | None) -> datetime:
    assert stamp, 'timestamp missing'
    return datetime.strptime(stamp.decode(), '%Y-%m-%dT%H:%M:%S.%fZ')


async def test_mixed_fleet_drains_one_queue(
    conn: Redis, sync_conn: redis.Redis, redis_url: str, processes: Processes
) -> None:
    py = sys.executable
    stock = [py, '-m', 'rq.cli', 'worker', '--url', redis_url, *MAINTENANCE]
    processes.start('rq-fork', [*stock, QUEUE])
    processes.start('rq-simple', [*stock, '-w', 'rq.worker.SimpleWorker', QUEUE])
    for _ in range(2):
        processes.start(
            'aiorq', [py, '-m', 'aiorq_worker', 'worker', '--url', redis_url, *MAINTENANCE, '--concurrency', '8', QUEUE]
        )

    # Wait until all four are registered and idle (blocked in their pop), so all of them compete.
    deadline = time.monotonic() + 30
    while True:
        workers = RQWorker.all(connection=sync_conn)
        if len(workers) == 4 and all(w.state == 'idle' for w in workers):
            break
        assert time.monotonic() < deadline, f'workers did not come up: {workers}\n{processes.logs()}'
        await asyncio.sleep(0.1)

    specs = plan(random.Random(SEED))
    assert len(specs) >= 1000
    rq_queue = rq.Queue(QUEUE, connection=sync_conn)
    aiorq_queue = aiorq.Queue(QUEUE, connection=conn)
    for spec in specs:
        depends_on = specs[spec.parent].id if spec.parent is not None else None
        if spec.client == 'rq':
            spec.id = rq_queue.enqueue(spec.func, *spec.args, depends_on=depends_on).id
        else:
            spec.id = (await aiorq_queue.enqueue(spec.func, *spec.args, depends_on=depends_on)).id
    ids = [s.id for s in specs]
    assert Counter(s.client for s in specs) == {'rq': len(specs) // 2 + len(specs) % 2, 'aiorq': len(specs) // 2}

    deadline = time.monotonic() + DEADLINE
    while True:
        current = statuses(sync_conn, ids)
        pending = [i for i, s in zip(ids, current) if s not in ('finished', 'failed')]
        if not pending and sync_conn.llen(f'rq:queue:{QUEUE}') == 0 and sync_conn.zcard(f'rq:wip:{QUEUE}') == 0:
            break
        assert time.monotonic() < deadline, (
            f'{len(pending)} jobs not terminal after {DEADLINE}s: {Counter(current)}\n{processes.logs()}'
        )
        await asyncio.sleep(0.2)

    # The workers' counters, read as rq reads them, before anyone shuts down.
    workers = RQWorker.all(connection=sync_conn)
    assert sorted(processes.name_of(w.pid) for w in workers) == ['aiorq', 'aiorq', 'rq-fork', 'rq-simple']
    succeeded = [s for s in specs if not s.fails]
    failed = [s for s in specs if s.fails]
    by_worker = {w.name: (w.successful_job_count, w.failed_job_count) for w in workers}
    for w in workers:
        assert w.successful_job_count > 0, f'{processes.name_of(w.pid)} worker {w.name} ran no job: {by_worker}'
    assert sum(ok for ok, _ in by_worker.values()) == len(succeeded)
    assert sum(ko for _, ko in by_worker.values()) == len(failed)
    # Each job hash names the worker that ran it; that tally matches the worker counters.
    with sync_conn.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.hget(f'rq:job:{job_id}', 'worker_name')
        ran_by = Counter(n.decode() for n in pipe.execute())
    assert ran_by == {name: ok + ko for name, (ok, ko) in by_worker.items()}

    for w in workers:
        send_shutdown_command(sync_conn, w.name)
    codes = processes.wait_all(30)
    assert all(code == 0 for code in codes.values()), f'exit codes {codes}\n{processes.logs()}'
    assert RQWorker.all(connection=sync_conn) == []
    assert sync_conn.keys('rq:worker:*:executions') == []

    # Exactly one run per job.
    ran = Counter(x.decode() for x in sync_conn.lrange('ran', 0, -1))
    assert [i for i, n in ran.items() if n > 1] == []
    assert set(ran) == set(ids)
    assert sum(ran.values()) == len(succeeded) + len(failed) == len(specs)

    # Each job where stock rq puts it, with rq's status and Result.
    assert set(rq_queue.finished_job_registry.get_job_ids()) == {s.id for s in succeeded}
    assert set(rq_queue.failed_job_registry.get_job_ids()) == {s.id for s in failed}
    jobs = dict(zip(ids, RQJob.fetch_many(ids, connection=sync_conn)))
    for spec in specs:
        job = jobs[spec.id]
        assert job is not None, spec
        latest = job.latest_result()
        assert latest is not None, spec
        if spec.fails:
            assert job.get_status(refresh=False) == rq.job.JobStatus.FAILED
            assert latest.type == Result.Type.FAILED
            assert 'ValueError: planned failure' in (latest.exc_string or '')
        else:
            assert job.get_status(refresh=False) == rq.job.JobStatus.FINISHED
            assert latest.type == Result.Type.SUCCESSFUL
            assert latest.return_value == spec.expected, spec

    # Dependents started only after their parent ended.
    chained = [s for s in specs if s.parent is not None]
    assert len(chained) >= 100
    with sync_conn.pipeline(transaction=False) as pipe:
        for spec in chained:
            pipe.hget(f'rq:job:{specs[spec.parent].id}', 'ended_at')  # type: ignore[index]
            pipe.hget(f'rq:job:{spec.id}', 'started_at')
        stamps = pipe.execute()
    for spec, parent_ended, child_started in zip(chained, stamps[0::2], stamps[1::2]):
        assert parse(parent_ended) <= parse(child_started), spec

    # Nothing in flight or waiting anywhere.
    for key in (
        f'rq:queue:{QUEUE}',
        f'rq:queue:{QUEUE}:intermediate',
    ):
        assert sync_conn.llen(key) == 0, key
    for key in (f'rq:wip:{QUEUE}', f'rq:ready:{QUEUE}', f'rq:deferred:{QUEUE}'):
        assert sync_conn.zcard(key) == 0, key


@pytest.mark.parametrize(
    'worker',
    [
        'rq',
        'aiorq',
    ],
)
def test_one_worker_releases_every_dependent(
    sync_conn: redis.Redis, redis_url: str, processes: Processes, worker: str
) -> None:
    """A single burst worker drains 300 parent → child chains; every child is released when its
    parent finishes (rq-protocol §4.11), none is left ``ready_to_enqueue`` for maintenance.

    A lone stock worker never contends with itself for ``rq:ready:<q>``; a lone aiorq worker runs
    its default 16 executions at once, and each of them releasing a dependent modifies that key."""
    q = rq.Queue(QUEUE, connection=sync_conn)
    children = []
    for i in range(300):
        parent = q.enqueue(tasks.add, i, 1)
        children.append(q.enqueue(tasks.add, i, 2, depends_on=parent).id)
    if worker == 'rq':
        args = [sys.executable, '-m', 'rq.cli', 'worker', '--burst', '--url', redis_url, '-w', 'rq.worker.SimpleWorker']
    else:
        args = [sys.executable, '-m', 'aiorq_worker', 'worker', '--burst', '--url', redis_url]
    processes.start(worker, [*args, QUEUE])
    assert processes.wait_all(60) == {pid: 0 for pid in processes.procs}, processes.logs()
    assert Counter(statuses(sync_conn, children)) == {'finished': len(children)}
    assert sync_conn.zcard(f'rq:ready:{QUEUE}') == 0
