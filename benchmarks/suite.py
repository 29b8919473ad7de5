"""aiorq, stock rq 3.0, arq, saq and streaQ side by side: every benchmark case in one run.

    python benchmarks/suite.py [--rounds R] [--quick] [--json PATH] [--jobs N] [--io-jobs N]
                               [--latency-jobs N] [--idle-jobs N] [--seed S]
                               [--loop asyncio|uvloop|both] [--only CASE[,CASE...]]
    python benchmarks/suite.py --report RESULTS.jsonl    (the report of an earlier run, again)

``make bench`` runs it in a separate virtualenv (``.venv-bench``: aiorq editable + arq + saq +
streaQ); ``make bench ARGS='--quick'`` is the smoke test. arq, saq and streaQ are optional: a
system that is not importable gets a "not installed" row and the suite goes on.

It starts a private ``redis-server`` on a free loopback port (never 6379) and runs every case for
every system in rounds (default 3, the order of the systems rotating each round); the tables show
the median over the rounds, the JSON lines (``--json``, default ``benchmarks/results.jsonl``) every
single measurement. The machine is assumed to be noisy: compare ratios within one run (computed
per round, then the median), and look at the CPU columns (CPU time per job does not depend on what
else runs on the machine as much as wall-clock rates do).

``--loop`` (default ``both``) is the event loop of every worker process: aiorq's ``aiorq worker
--loop L``; arq, saq and streaQ through ``suite_worker.py --loop L`` (uvloop: ``uvloop.run``, or
anyio's ``loop_factory`` for streaQ). Every case that starts a worker runs once per loop, so the
ratios are given on both loops in one run; stock rq's worker has no event loop (its rows appear
with asyncio's). Clients always run on asyncio's own loop.

Cases (N = --jobs, default 5000):

1. ``enqueue-seq``   N enqueues one call at a time: rq ``Queue.enqueue`` (sync), aiorq
   ``await Queue.enqueue``, arq ``await pool.enqueue_job``, saq ``await queue.enqueue``, streaQ
   ``await task.enqueue(i)``.
2. ``enqueue-100``   the same with 100 calls in flight (``asyncio.gather`` + a semaphore of 100);
   rq is sync (n/a; case 1 is its comparison point). saq's client caps itself at 20 concurrent
   operations (``RedisQueue(max_concurrent_ops=20)``, its default, kept).
3. ``enqueue-many``  ``enqueue_many`` in batches of 500: rq and aiorq (``Queue.prepare_data``
   items), streaQ (``Worker.enqueue_many``, one pipeline); arq and saq have no bulk enqueue.
4. ``worker-async``  N ``async def`` no-op jobs drained by a worker in burst mode at concurrency 100:
   ``rq worker -w rq.worker.SimpleWorker --burst`` (one job at a time; rq runs a coroutine function
   with ``asyncio.run`` per job), ``aiorq worker --burst --concurrency 100 --loop L``, arq
   (``max_jobs=100``, ``poll_delay=0.01`` instead of its default 0.5 s, burst), saq
   (``concurrency=100``, burst with ``dequeue_timeout=0.1``), streaQ (``concurrency=100``, burst),
   see ``suite_worker.py``. saq's start-up sweep is skipped by taking its sweep lock first (it
   races with the first dequeues and aborts jobs as "swept", see ``skip_saq_startup_sweep``).
5. ``worker-sync``   the same with a plain function: aiorq runs it in its thread pool (``--sync-jobs
   thread``, the default, ``--concurrency 100``), rq SimpleWorker in-process, saq in its
   ``ThreadPoolExecutor``, streaQ in its worker threads; arq refuses plain functions (n/a).
6. ``latency-back-to-back``  enqueue -> result with an idle worker (already running, not burst),
   the next job sent the moment the last result arrives (see ``suite_latency.py``).
7. cost columns of cases 4 and 5 (and 8, 9, 11): worker CPU (user+sys from ``os.wait4``, children
   included) per job, Redis server CPU per job (``INFO`` used_cpu_user+used_cpu_sys around the
   worker run), Redis commands per job (``INFO`` total_commands_processed delta minus the suite's
   own ``INFO``), worker peak RSS (VmHWM sampled every 20 ms from /proc: wait4's ``ru_maxrss``
   includes the parent's peak on Linux). ``startup`` rows: the same worker in burst mode on an
   empty queue (interpreter start, imports, connect, stop), whose CPU is included in the per-job
   figures (the "net" column subtracts it). Cases 1-3: client CPU per job (``time.process_time``),
   Redis CPU and commands per job around the enqueues.
8. ``io-bound``      aiorq, N_io (default 2000) jobs each sleeping 100 ms, concurrency 100 and 500:
   rate as a fraction of the ideal (N_io x 0.1 s / C).
9. ``scale``         1, 2 and 4 aiorq worker processes (concurrency 100 each, burst) on one queue of
   N ``async def`` no-ops (``--quick``: 1 and 2).
10. ``latency-idle`` the independent way: a random 5-15 ms idle gap (seeded by ``--seed``) before
   each job, every system waiting its own fastest way (two ways for aiorq and saq), p50/p90/p99
   over ``--idle-jobs`` jobs (see ``suite_latency.py``).
11. ``pool``         N ``async def`` no-ops: ``aiorq worker --burst --concurrency 100`` (one process)
   against ``aiorq worker-pool -n 2 --burst --concurrency 100`` (n/a while the command does not
   exist), with the Redis CPU per job and the throughput at which one Redis core would saturate
   (1e6 / Redis CPU us per job).

Worker throughput is timed from the first job's start to the last job's end as each system records
them (rq/aiorq: ``started_at``/``ended_at`` of the job hashes; arq: ``start_time``/``finish_time`` of
its job results; saq: ``started``/``completed`` of its jobs; streaQ: ``st``/``ft`` of its results;
all in milliseconds or better), so interpreter start-up is not counted; the wall time of the worker
process is shown too. Every job's result is checked (return value == argument, nothing left
queued); a run that lost or failed a job is FAILED and not timed. The report ends with issue 15's
targets, each computed from this run (``suite_report.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime, timezone
from typing import Any

import redis
import suite_jobs
import suite_streaq
from bench import RedisServer
from rq import Queue as RQQueue
from rq.job import Job as RQJob
from rq.job import JobStatus
from suite_core import (
    BATCH,
    CONCURRENCY,
    HERE,
    IN_FLIGHT,
    LOOPS,
    QUEUE,
    SYSTEMS,
    Measurement,
    RunError,
    Sizes,
    WorkerProcess,
    gather_limited,
    import_error,
    installed,
    pool_command,
    pool_help,
    redis_snapshot,
    version_of,
    worker_command,
)  # fmt: skip
from suite_latency import VARIANTS, latency_run
from suite_report import render, summarize

ARQ_CLIENT_POLL = 0.01

CASES = {
    'enqueue-seq': '1. Enqueue, one call at a time (no-op function)',
    'enqueue-100': f'2. Enqueue, {IN_FLIGHT} calls in flight (asyncio.gather + semaphore)',
    'enqueue-many': f'3. enqueue_many (batches of {BATCH})',
    'worker-async': f'4+7. Worker throughput and cost, async def no-op, concurrency {CONCURRENCY}, burst',
    'worker-sync': f'5+7. Worker throughput and cost, plain (sync) no-op, concurrency {CONCURRENCY}, burst',
    'startup': '7. Worker start-up + stop on an empty queue (burst), included in the per-job CPU above',
    'latency-back-to-back': '6. Latency enqueue -> result, running worker, next job sent at once',
    'latency-idle': '10. Latency enqueue -> result, idle worker (5-15 ms idle gaps, seeded)',
    'io-bound': '8. I/O-bound: aiorq jobs sleeping 100 ms, burst',
    'scale': f'9. Scale: aiorq worker processes on one queue, concurrency {CONCURRENCY} each, async no-op',
    'pool': f'11. Worker pool: aiorq worker vs aiorq worker-pool -n 2, concurrency {CONCURRENCY} each, async no-op',
}
CLIENT_CASES = ('enqueue-seq', 'enqueue-100', 'enqueue-many')

NOT_APPLICABLE = {
    ('enqueue-100', 'rq'): 'sync client; sequential enqueue (case 1) is its comparison point',
    ('enqueue-many', 'arq'): 'arq has no bulk enqueue',
    ('enqueue-many', 'saq'): 'saq has no enqueue_many (Queue.batch() only aborts the jobs on error)',
    ('worker-sync', 'arq'): 'arq registers coroutine functions only ("... is not a coroutine function")',
}
RQ_NO_LOOP = "rq's worker runs no event loop: its row is with asyncio's"


def header(conn: redis.Redis, sizes: Sizes, systems: list[str], loops: list[str]) -> dict[str, Any]:
    info = conn.info('server')
    return {
        'type': 'header',
        'time': datetime.now(timezone.utc).isoformat(timespec='seconds'),
        'cpu_count': os.cpu_count(),
        'loadavg': [round(x, 2) for x in os.getloadavg()],
        'python': platform.python_version(),
        'platform': platform.platform(),
        'versions': {
            'aiorq': version_of('aiorq'),
            'rq': version_of('rq'),
            'arq': version_of('arq') or 'not installed',
            'saq': version_of('saq') or 'not installed',
            'streaq': version_of('streaq') or 'not installed',
            'uvloop': version_of('uvloop') or 'not installed',
            'redis-server': info.get('redis_version'),
            'redis-py': version_of('redis'),
            'hiredis': version_of('hiredis') or 'not installed',
        },
        'systems': systems,
        'sizes': asdict(sizes),
        'loops': loops,
        'event_loop': f'workers on {" and ".join(loops)} (one pass each); clients on asyncio.run',
    }


# ---------------------------------------------------------------------------------------------
# Pre-filling queues (not timed) and checking results, per system


def rq_prefill(conn: redis.Redis, func: Any, n: int) -> list[str]:
    queue = RQQueue(QUEUE, connection=conn)
    ids: list[str] = []
    for start in range(0, n, BATCH):
        datas = [RQQueue.prepare_data(func, args=(i,)) for i in range(start, min(n, start + BATCH))]
        ids += [job.id for job in queue.enqueue_many(datas)]
    return ids


def rq_verify(conn: redis.Redis, ids: list[str]) -> tuple[float, float]:
    """Every job finished with its index as result; (first started_at, last ended_at) as timestamps."""
    starts, ends = [], []
    for i, (job_id, job) in enumerate(zip(ids, RQJob.fetch_many(ids, connection=conn))):
        if job is None:
            raise RunError(f'job {job_id} vanished')
        status = job.get_status(refresh=False)
        if status != JobStatus.FINISHED:
            raise RunError(f'job {job_id} is {status}, not finished')
        value = job.return_value()
        if value != i:
            raise RunError(f'job {job_id} returned {value!r}, expected {i}')
        if job.started_at is None or job.ended_at is None:
            raise RunError(f'job {job_id} lacks started_at/ended_at')
        starts.append(job.started_at.replace(tzinfo=timezone.utc).timestamp())
        ends.append(job.ended_at.replace(tzinfo=timezone.utc).timestamp())
    if conn.llen(f'rq:queue:{QUEUE}') or conn.zcard(f'rq:wip:{QUEUE}'):
        raise RunError('jobs left in the queue or the started registry')
    return min(starts), max(ends)


async def arq_pool(url: str) -> Any:
    from arq.connections import RedisSettings, create_pool

    return await create_pool(RedisSettings.from_dsn(url))


async def arq_prefill(url: str, n: int) -> list[str]:
    pool = await arq_pool(url)
    try:
        jobs = await gather_limited(n, lambda i: pool.enqueue_job('arq_async_noop', i))
        return [job.job_id for job in jobs]
    finally:
        await pool.aclose()


async def arq_verify(url: str, ids: list[str]) -> tuple[float, float]:
    from arq.constants import default_queue_name, result_key_prefix
    from arq.jobs import deserialize_result

    pool = await arq_pool(url)
    try:
        raws = []
        for start in range(0, len(ids), BATCH):
            raws += await pool.mget([result_key_prefix + job_id for job_id in ids[start : start + BATCH]])
        starts, ends = [], []
        for i, (job_id, raw) in enumerate(zip(ids, raws)):
            if raw is None:
                raise RunError(f'arq job {job_id} has no result')
            res = deserialize_result(raw)
            if not res.success or res.result != i:
                raise RunError(f'arq job {job_id}: success={res.success} result={res.result!r}, expected {i}')
            starts.append(res.start_time.timestamp())
            ends.append(res.finish_time.timestamp())
        if await pool.zcard(default_queue_name):
            raise RunError('jobs left in the arq queue')
        return min(starts), max(ends)
    finally:
        await pool.aclose()


async def saq_queue(url: str) -> Any:
    from saq import Queue

    queue = Queue.from_url(url, name=QUEUE)
    await queue.connect()
    return queue


async def saq_prefill(url: str, func: str, n: int) -> list[str]:
    queue = await saq_queue(url)
    try:
        jobs = await gather_limited(n, lambda i: queue.enqueue(func, i=i))
        return [job.key for job in jobs]
    finally:
        await queue.disconnect()


async def saq_verify(url: str, keys: list[str]) -> tuple[float, float]:
    from saq.job import Status

    queue = await saq_queue(url)
    try:
        jobs = []
        for start in range(0, len(keys), BATCH):
            jobs += await queue.jobs(keys[start : start + BATCH])
        starts, ends = [], []
        for i, (key, job) in enumerate(zip(keys, jobs)):
            if job is None:
                raise RunError(f'saq job {key} vanished')
            if job.status != Status.COMPLETE or job.result != i:
                raise RunError(f'saq job {key}: {job.status} result={job.result!r} error={job.error!r}, expected {i}')
            starts.append(job.started / 1000)
            ends.append(job.completed / 1000)
        left = await queue.count('queued') + await queue.count('active')
        if left:
            raise RunError(f'{left} jobs left queued or active in saq')
        return min(starts), max(ends)
    finally:
        await queue.disconnect()


def prefill(system: str, conn: redis.Redis, url: str, kind: str, n: int) -> list[str]:
    if system in ('rq', 'aiorq'):
        func = {'async': suite_jobs.async_noop, 'plain': suite_jobs.noop, 'sleep': suite_jobs.sleep_100ms}[kind]
        return rq_prefill(conn, func, n)
    if system == 'arq':
        return asyncio.run(arq_prefill(url, n))
    if system == 'streaq':
        return asyncio.run(suite_streaq.prefill(url, kind, n))
    return asyncio.run(saq_prefill(url, 'saq_async_noop' if kind == 'async' else 'saq_noop', n))


def verify(system: str, conn: redis.Redis, url: str, ids: list[str]) -> tuple[float, float]:
    if system in ('rq', 'aiorq'):
        return rq_verify(conn, ids)
    if system == 'arq':
        return asyncio.run(arq_verify(url, ids))
    if system == 'streaq':
        return asyncio.run(suite_streaq.verify(url, ids))
    return asyncio.run(saq_verify(url, ids))


# ---------------------------------------------------------------------------------------------
# Cases 4, 5, 7, 8, 9, 11: burst workers


def skip_saq_startup_sweep(system: str, conn: redis.Redis) -> None:
    """saq's worker sweeps its active list as it starts, concurrently with its first dequeues: a
    job moved to the active list whose status is not yet ACTIVE gets aborted as "swept" (seen in
    this suite). Taking saq's sweep lock first (as a worker that swept within the last minute
    would have) avoids that race."""
    if system == 'saq':
        conn.setex(f'saq:{QUEUE}:sweep', 600, 1)


def burst_run(m: Measurement, conn: redis.Redis, url: str, kind: str, n: int, concurrency: int) -> Measurement:
    """``m.workers`` worker processes (or one ``worker-pool`` for ``m.variant == 'worker-pool'``)
    drain n pre-filled jobs of ``kind`` in burst mode; timed from the jobs' own timestamps."""
    conn.flushdb()
    ids = prefill(m.system, conn, url, kind, n)
    skip_saq_startup_sweep(m.system, conn)
    processes = m.workers or 1
    cpu0, cmds0 = redis_snapshot(conn)
    if m.variant == 'worker-pool':
        cmds = [pool_command(url, processes, concurrency, m.loop)]
    else:
        cmd = worker_command(m.system, url, 'plain' if kind == 'plain' else 'async', concurrency, True, m.loop)
        cmds = [cmd] * processes
    began = time.monotonic()
    procs = [WorkerProcess(cmd) for cmd in cmds]
    exits = [p.wait() for p in procs]
    wall = time.monotonic() - began
    cpu1, cmds1 = redis_snapshot(conn)
    m.n, m.concurrency = n, concurrency
    for e in exits:
        if e.returncode != 0:
            raise RunError(f'worker exited with {e.returncode}: {e.stderr[-2000:]}')
    first, last = verify(m.system, conn, url, ids)
    m.verified = n
    m.seconds = last - first
    m.rate = n / m.seconds if m.seconds > 0 else None
    m.wall = wall
    m.cpu_s = sum(e.cpu_s for e in exits)
    m.cpu_us_per_job = m.cpu_s / n * 1e6
    m.rss_mb = max(e.rss_mb for e in exits)
    m.redis_cpu_us_per_job = (cpu1 - cpu0) / n * 1e6
    m.cmds_per_job = (cmds1 - cmds0 - 1) / n  # minus the first INFO itself
    conn.flushdb()
    return m


def startup_run(m: Measurement, conn: redis.Redis, url: str) -> Measurement:
    conn.flushdb()
    e = WorkerProcess(worker_command(m.system, url, 'async', CONCURRENCY, True, m.loop)).wait()
    if e.returncode != 0:
        raise RunError(f'worker exited with {e.returncode}: {e.stderr[-2000:]}')
    m.wall, m.cpu_s, m.rss_mb = e.wall, e.cpu_s, e.rss_mb
    conn.flushdb()
    return m


# ---------------------------------------------------------------------------------------------
# Cases 1-3: client enqueue


def clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def since(t: tuple[float, float]) -> tuple[float, float]:
    return time.perf_counter() - t[0], time.process_time() - t[1]


def rq_enqueue(conn: redis.Redis, n: int, mode: str) -> tuple[float, float]:
    queue = RQQueue(QUEUE, connection=conn)
    conn.ping()
    t = clock()
    if mode == 'seq':
        for i in range(n):
            queue.enqueue(suite_jobs.noop, i)
    else:
        for start in range(0, n, BATCH):
            queue.enqueue_many(
                [RQQueue.prepare_data(suite_jobs.noop, args=(i,)) for i in range(start, min(n, start + BATCH))]
            )
    return since(t)


async def aiorq_enqueue(url: str, n: int, mode: str) -> tuple[float, float]:
    import redis.asyncio

    from aiorq import Queue

    conn = redis.asyncio.Redis.from_url(url)
    try:
        queue = Queue(QUEUE, connection=conn)
        await conn.ping()
        t = clock()
        if mode == 'seq':
            for i in range(n):
                await queue.enqueue(suite_jobs.noop, i)
        elif mode == 'gather':
            await gather_limited(n, lambda i: queue.enqueue(suite_jobs.noop, i))
        else:
            for start in range(0, n, BATCH):
                await queue.enqueue_many(
                    [Queue.prepare_data(suite_jobs.noop, args=(i,)) for i in range(start, min(n, start + BATCH))]
                )
        return since(t)
    finally:
        await conn.aclose()


async def arq_enqueue(url: str, n: int, mode: str) -> tuple[float, float]:
    pool = await arq_pool(url)
    try:
        t = clock()
        if mode == 'seq':
            for i in range(n):
                await pool.enqueue_job('arq_async_noop', i)
        else:
            await gather_limited(n, lambda i: pool.enqueue_job('arq_async_noop', i))
        return since(t)
    finally:
        await pool.aclose()


async def saq_enqueue(url: str, n: int, mode: str) -> tuple[float, float]:
    queue = await saq_queue(url)
    try:
        await queue.redis.ping()
        t = clock()
        if mode == 'seq':
            for i in range(n):
                await queue.enqueue('saq_async_noop', i=i)
        else:
            await gather_limited(n, lambda i: queue.enqueue('saq_async_noop', i=i))
        return since(t)
    finally:
        await queue.disconnect()


async def streaq_enqueue(url: str, n: int, mode: str) -> tuple[float, float]:
    """streaQ's client connects inside ``enqueue`` (``async with worker``): that connect and its
    library load are timed too, a few ms against the N enqueues."""
    t = clock()
    await suite_streaq.enqueue(url, n, mode)
    return since(t)


def queued_count(system: str, conn: redis.Redis) -> int:
    if system in ('rq', 'aiorq'):
        return int(conn.llen(f'rq:queue:{QUEUE}'))
    if system == 'arq':
        return int(conn.zcard('arq:queue'))
    if system == 'streaq':
        return int(conn.xlen(suite_streaq.stream_key()))
    return int(conn.llen(f'saq:{QUEUE}:queued'))


def enqueue_run(m: Measurement, conn: redis.Redis, url: str, n: int, mode: str) -> Measurement:
    conn.flushdb()
    if m.system == 'rq':
        body: Callable[[], tuple[float, float]] = lambda: rq_enqueue(conn, n, mode)  # noqa: E731
    else:
        coro = {'aiorq': aiorq_enqueue, 'arq': arq_enqueue, 'saq': saq_enqueue, 'streaq': streaq_enqueue}[m.system]
        body = lambda: asyncio.run(coro(url, n, mode))  # noqa: E731
    cpu0, cmds0 = redis_snapshot(conn)
    seconds, cpu = body()
    cpu1, cmds1 = redis_snapshot(conn)
    m.n, m.seconds, m.cpu_s = n, seconds, cpu
    m.rate = n / seconds if seconds > 0 else None
    m.cpu_us_per_job = cpu / n * 1e6
    m.redis_cpu_us_per_job = (cpu1 - cpu0) / n * 1e6
    m.cmds_per_job = (cmds1 - cmds0 - 1) / n  # minus the first INFO (the client's connect/ping stay in)
    m.concurrency = IN_FLIGHT if mode == 'gather' else 1
    got = queued_count(m.system, conn)
    if got != n:
        raise RunError(f'{got} jobs queued after enqueueing {n}')
    m.verified = n
    conn.flushdb()
    return m


# ---------------------------------------------------------------------------------------------
# The rounds

Step = tuple[str, str, dict[str, Any]]


def worker_steps(loop: str, scale: tuple[int, ...]) -> list[Step]:
    """(case, system, options) of every case that starts a worker, on ``loop``."""
    on = {'loop': loop}
    steps: list[Step] = []
    steps += [('worker-async', s, {**on, 'kind': 'async'}) for s in SYSTEMS]
    steps += [('worker-sync', s, {**on, 'kind': 'plain'}) for s in SYSTEMS]
    steps += [('startup', s, on) for s in SYSTEMS]
    for case in ('latency-back-to-back', 'latency-idle'):
        steps += [(case, s, {**on, 'variant': v}) for s in SYSTEMS for v in VARIANTS[(case, s)]]
    steps += [('io-bound', 'aiorq', {**on, 'concurrency': c}) for c in (100, 500)]
    steps += [('scale', 'aiorq', {**on, 'processes': k}) for k in scale]
    steps += [('pool', 'aiorq', {**on, 'variant': v, 'processes': k}) for v, k in (('worker', 1), ('worker-pool', 2))]
    return steps


def plan(loops: list[str], quick: bool = False) -> list[Step]:
    """(case, system, options) for one round, systems in SYSTEMS order (``quick``: no 4 processes)."""
    steps: list[Step] = []
    for case, mode in (('enqueue-seq', 'seq'), ('enqueue-100', 'gather'), ('enqueue-many', 'many')):
        steps += [(case, s, {'mode': mode}) for s in SYSTEMS]
    for loop in loops:
        steps += worker_steps(loop, (1, 2) if quick else (1, 2, 4))
    return steps


def unavailable(m: Measurement) -> Measurement | None:
    """``m`` marked "not installed" or "n/a" when the system cannot run this step, else None."""
    if not installed(m.system):
        m.status, m.version = 'not installed', ''
        if importlib.util.find_spec(m.system) is not None:
            m.note = f'import fails: {import_error(m.system)}'
        return m
    if (m.case, m.system) in NOT_APPLICABLE:
        m.status, m.note = 'n/a', NOT_APPLICABLE[(m.case, m.system)]
        return m
    if m.system == 'rq' and m.loop == 'uvloop':
        m.status, m.note = 'n/a', RQ_NO_LOOP
        return m
    if m.variant == 'worker-pool' and pool_help() is None:
        m.status, m.note = 'n/a', '`aiorq worker-pool` does not exist in this checkout yet'
        return m
    return None


def run_step(m: Measurement, opts: dict[str, Any], conn: redis.Redis, url: str, sizes: Sizes, seed: int) -> Measurement:
    if unavailable(m) is not None:
        return m
    try:
        if m.case.startswith('enqueue'):
            return enqueue_run(m, conn, url, sizes.jobs, opts['mode'])
        if m.case in ('worker-async', 'worker-sync'):
            return burst_run(m, conn, url, opts['kind'], sizes.jobs, CONCURRENCY)
        if m.case == 'startup':
            return startup_run(m, conn, url)
        if m.case in ('latency-back-to-back', 'latency-idle'):
            n = sizes.latency_jobs if m.case == 'latency-back-to-back' else sizes.idle_jobs
            return latency_run(m, conn, url, n, seed)
        if m.case == 'io-bound':
            c = opts['concurrency']
            burst_run(m, conn, url, 'sleep', sizes.io_jobs, c)
            if m.seconds:
                m.ideal_fraction = (sizes.io_jobs * 0.1 / c) / m.seconds
            return m
        if m.case in ('scale', 'pool'):
            return burst_run(m, conn, url, 'async', sizes.jobs, CONCURRENCY)
        raise AssertionError(m.case)
    except Exception as exc:  # a crash of one system's run is reported, not fatal
        m.status, m.note = 'FAILED', (str(exc) if isinstance(exc, RunError) else repr(exc))[:4000]
        m.rate = m.seconds = None
        m.verified = 0
        conn.flushdb()
        return m


def rotated(steps: list[Step], rnd: int) -> list[Step]:
    """The same steps with the order of the systems within each case (and loop) rotated by the round."""
    out: list[Step] = []
    i = 0
    while i < len(steps):
        j = i
        key = (steps[i][0], steps[i][2].get('loop'))
        while j < len(steps) and (steps[j][0], steps[j][2].get('loop')) == key:
            j += 1
        group = steps[i:j]
        k = rnd % len(group)
        out += group[k:] + group[:k]
        i = j
    return out


def progress(m: Measurement) -> None:
    if m.status not in ('ok', 'FAILED'):
        return
    extra = f' c={m.concurrency}' if m.case == 'io-bound' else f' x{m.workers}' if m.workers else ''
    extra += f' {m.variant}' if m.variant else ''
    extra += f' [{m.loop}]' if m.loop else ''
    if m.status != 'ok':
        what = m.status
    elif m.p50_ms is not None:
        what = f'p50 {m.p50_ms:.2f} ms'
    elif m.rate is not None:
        what = f'{m.rate:.0f} jobs/s'
    else:
        what = f'CPU {m.cpu_s or 0:.3f} s'
    print(f'... round {m.round} {m.case} {m.system}{extra}: {what}', file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, Sizes, list[str]]:
    parser = argparse.ArgumentParser(description=(__doc__ or '').split('\n\n')[0])
    parser.add_argument('--rounds', type=int, default=3, help='rounds, median reported (default 3)')
    parser.add_argument('--jobs', type=int, default=5000, help='jobs per throughput/enqueue run (default 5000)')
    parser.add_argument('--io-jobs', type=int, default=2000, help='jobs per I/O-bound run (default 2000)')
    parser.add_argument('--latency-jobs', type=int, default=200, help='jobs per back-to-back latency run (default 200)')
    parser.add_argument('--idle-jobs', type=int, default=300, help='jobs per idle latency run (default 300)')
    parser.add_argument('--seed', type=int, default=15, help='seed of the idle gaps (default 15)')
    parser.add_argument('--loop', choices=['asyncio', 'uvloop', 'both'], default='both', help='worker event loop(s)')
    parser.add_argument('--quick', action='store_true', help='a smoke test: 200/200/20/20 jobs, 1 round, no x4')
    parser.add_argument('--only', default='', help=f'comma-separated cases among {", ".join(CASES)}')
    parser.add_argument('--json', default=str(HERE / 'results.jsonl'), help='JSON lines output (default %(default)s)')
    parser.add_argument('--report', metavar='JSONL', help='print the report of an earlier run from its JSON lines')
    args = parser.parse_args(argv)
    sizes = Sizes(args.jobs, args.io_jobs, args.latency_jobs, args.idle_jobs, args.rounds)
    if args.quick:
        sizes = Sizes(200, 200, 20, 20, 1)
    if min(asdict(sizes).values()) < 1:
        parser.error('sizes and rounds must be at least 1')
    only = {c for c in args.only.split(',') if c}
    if only - set(CASES):
        parser.error(f'unknown case(s): {", ".join(sorted(only - set(CASES)))}')
    args.only = only
    loops = list(LOOPS) if args.loop == 'both' else [args.loop]
    if 'uvloop' in loops and import_error('uvloop') is not None:
        if args.loop == 'uvloop':
            parser.error(f'uvloop is not importable: {import_error("uvloop")}')
        print('uvloop is not importable: workers run on asyncio only', file=sys.stderr)
        loops = ['asyncio']
    return args, sizes, loops


def report(path: str) -> int:
    """The report of an earlier run, rendered again from its JSON lines (``--report``)."""
    with open(path) as f:
        records = [json.loads(line) for line in f if line.strip()]
    head = records[0]
    fields = set(Measurement.__dataclass_fields__)
    results = [
        Measurement(**{k: v for k, v in r.items() if k in fields}) for r in records if r['type'] == 'measurement'
    ]
    print(render(summarize(results), results, Sizes(**head['sizes']), head, CASES))
    return 1 if any(m.status == 'FAILED' for m in results) else 0


def main(argv: list[str] | None = None) -> int:
    args, sizes, loops = parse_args(argv)
    if args.report:
        return report(args.report)
    server = RedisServer()
    results: list[Measurement] = []
    try:
        conn = redis.Redis.from_url(server.url)
        head = header(conn, sizes, [s for s in SYSTEMS if installed(s)], loops)
        steps = [s for s in plan(loops, args.quick) if not args.only or s[0] in args.only]
        with open(args.json, 'w') as out:
            out.write(json.dumps(head) + '\n')
            for rnd in range(1, sizes.rounds + 1):
                for case, system, opts in rotated(steps, rnd - 1):
                    m = Measurement(
                        case=case, system=system, round=rnd, loop=opts.get('loop', ''),
                        variant=opts.get('variant', ''), version=version_of(system),
                        workers=opts.get('processes'),
                    )  # fmt: skip
                    results.append(run_step(m, opts, conn, server.url, sizes, args.seed))
                    out.write(json.dumps({'type': 'measurement', **asdict(m)}) + '\n')
                    out.flush()
                    progress(m)
            summaries = summarize(results)
            for s in summaries:
                out.write(json.dumps(s) + '\n')
        conn.close()
    finally:
        server.stop()
    print(render(summaries, results, sizes, head, CASES))
    print(f'\nJSON lines: {args.json}')
    return 1 if any(m.status == 'FAILED' for m in results) else 0


if __name__ == '__main__':
    sys.exit(main())
