"""aiorq, stock rq 3.0, arq and saq side by side: every benchmark case in one run.

    python benchmarks/suite.py [--rounds R] [--quick] [--json PATH] [--jobs N] [--io-jobs N]
                               [--latency-jobs N] [--only CASE[,CASE...]]

``make bench`` runs it in a separate virtualenv (``.venv-bench``: aiorq editable + arq + saq);
``make bench ARGS='--quick'`` is the smoke test. arq and saq are optional: a system that is not
importable gets a "not installed" row and the suite goes on.

It starts a private ``redis-server`` on a free loopback port (never 6379) and runs every case for
every system in rounds (default 3, the order of the systems rotating each round); the tables show
the median over the rounds, the JSON lines (``--json``, default ``benchmarks/results.jsonl``) every
single measurement. The machine is assumed to be noisy: compare ratios within one run, and look at
the CPU columns (CPU time per job does not depend on what else runs on the machine as much as
wall-clock rates do).

Cases (N = --jobs, default 5000):

1. ``enqueue-seq``   N enqueues one call at a time: rq ``Queue.enqueue`` (sync), aiorq
   ``await Queue.enqueue``, arq ``await pool.enqueue_job``, saq ``await queue.enqueue``.
2. ``enqueue-100``   the same with 100 calls in flight (``asyncio.gather`` + a semaphore of 100);
   rq is sync (n/a; case 1 is its comparison point). saq's client caps itself at 20 concurrent
   operations (``RedisQueue(max_concurrent_ops=20)``, its default, kept).
3. ``enqueue-many``  ``enqueue_many`` in batches of 500 (``Queue.prepare_data`` items) for rq and
   aiorq; arq and saq have no bulk enqueue.
4. ``worker-async``  N ``async def`` no-op jobs drained by a worker in burst mode at concurrency 100:
   ``rq worker -w rq.worker.SimpleWorker --burst`` (one job at a time; rq runs a coroutine function
   with ``asyncio.run`` per job), ``aiorq worker --burst --concurrency 100 --loop asyncio``, arq
   (``max_jobs=100``, ``poll_delay=0.01`` instead of its default 0.5 s, burst), saq
   (``concurrency=100``, burst with ``dequeue_timeout=0.1``), see ``suite_worker.py``. saq's
   start-up sweep is skipped by taking its sweep lock first (it races with the first dequeues and
   aborts jobs as "swept", see ``skip_saq_startup_sweep``).
5. ``worker-sync``   the same with a plain function: aiorq runs it in its thread pool (``--sync-jobs
   thread``, the default, ``--concurrency 100``), rq SimpleWorker in-process, saq in its
   ``ThreadPoolExecutor``; arq refuses plain functions (n/a).
6. ``latency``       enqueue -> result with an idle worker (already running, not burst), sequential
   jobs, each timed from just before the enqueue to the moment the client holds the result: aiorq
   ``await job.latest_result(timeout=10)`` and rq ``job.latest_result(timeout=10)`` (both a
   blocking XREAD on the job's results stream), arq ``await job.result(poll_delay=0.01)`` (arq's
   default is 0.5 s; its worker polls every 0.01 s too), saq ``await queue.apply(...,
   poll_interval=0.01)`` (saq's default is 0.5 s; ``job.refresh(until_complete=...)`` listens on
   pub/sub but subscribes after reading the job, so a fast job's notification can be missed).
7. cost columns of cases 4 and 5 (and 8, 9): worker CPU (user+sys from ``os.wait4``) per job, Redis
   server CPU per job (``INFO`` used_cpu_user+used_cpu_sys around the worker run), Redis commands
   per job (``INFO`` total_commands_processed delta minus the suite's own ``INFO``), worker peak RSS
   (VmHWM sampled every 20 ms from /proc: wait4's ``ru_maxrss`` includes the parent's peak on
   Linux). ``startup`` rows: the same worker in burst mode on an empty queue (interpreter
   start, imports, connect, stop), whose CPU is included in the per-job figures (the "net" column
   subtracts it). Cases 1-3: client CPU per job (``time.process_time``), Redis CPU and commands
   per job around the enqueues.
8. ``io-bound``      aiorq, N_io (default 2000) jobs each sleeping 100 ms, concurrency 100 and 500:
   rate as a fraction of the ideal (N_io x 0.1 s / C).
9. ``scale``         1, 2 and 4 aiorq worker processes (concurrency 100 each, burst) on one queue of
   N ``async def`` no-ops.

Worker throughput is timed from the first job's start to the last job's end as each system records
them (rq/aiorq: ``started_at``/``ended_at`` of the job hashes; arq: ``start_time``/``finish_time`` of
its job results; saq: ``started``/``completed`` of its jobs, in milliseconds), so interpreter
start-up is not counted; the wall time of the worker process is shown too. Every job's result is
checked (return value == argument, nothing left queued); a run that lost or failed a job is FAILED
and not timed. Every worker runs on asyncio's default event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import importlib.util
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import redis
from rq import Queue as RQQueue
from rq.job import Job as RQJob
from rq.job import JobStatus

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import suite_jobs  # noqa: E402
from bench import RedisServer  # noqa: E402

QUEUE = 'bench'
SYSTEMS = ('aiorq', 'rq', 'arq', 'saq')
IN_FLIGHT = 100
CONCURRENCY = 100
BATCH = 500
WORKER_TIMEOUT = 600.0
ARQ_CLIENT_POLL = 0.01
SAQ_CLIENT_POLL = 0.01

CASES = {
    'enqueue-seq': '1. Enqueue, one call at a time (no-op function)',
    'enqueue-100': f'2. Enqueue, {IN_FLIGHT} calls in flight (asyncio.gather + semaphore)',
    'enqueue-many': f'3. enqueue_many (batches of {BATCH})',
    'worker-async': f'4+7. Worker throughput and cost, async def no-op, concurrency {CONCURRENCY}, burst',
    'worker-sync': f'5+7. Worker throughput and cost, plain (sync) no-op, concurrency {CONCURRENCY}, burst',
    'startup': '7. Worker start-up + stop on an empty queue (burst), included in the per-job CPU above',
    'latency': '6. Latency enqueue -> result, idle worker, sequential jobs',
    'io-bound': '8. I/O-bound: aiorq jobs sleeping 100 ms, burst',
    'scale': f'9. Scale: aiorq worker processes on one queue, concurrency {CONCURRENCY} each, async no-op',
}

NOT_APPLICABLE = {
    ('enqueue-100', 'rq'): 'sync client; sequential enqueue (case 1) is its comparison point',
    ('enqueue-many', 'arq'): 'arq has no bulk enqueue',
    ('enqueue-many', 'saq'): 'saq has no enqueue_many (Queue.batch() only aborts the jobs on error)',
    ('worker-sync', 'arq'): 'arq registers coroutine functions only ("... is not a coroutine function")',
}


class RunError(Exception):
    """A run lost a job, got a wrong result or its worker crashed."""


@dataclass
class Measurement:
    case: str
    system: str
    round: int
    version: str = ''
    status: str = 'ok'  # ok | FAILED | n/a | not installed
    note: str = ''
    n: int = 0
    concurrency: int | None = None
    workers: int | None = None
    rate: float | None = None
    seconds: float | None = None
    wall: float | None = None
    cpu_us_per_job: float | None = None
    cpu_s: float | None = None
    redis_cpu_us_per_job: float | None = None
    cmds_per_job: float | None = None
    rss_mb: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    ideal_fraction: float | None = None
    verified: int = 0


@dataclass
class Sizes:
    jobs: int
    io_jobs: int
    latency_jobs: int
    rounds: int


# ---------------------------------------------------------------------------------------------
# Environment


_IMPORT_ERRORS: dict[str, str | None] = {}


def import_error(system: str) -> str | None:
    """None when ``system`` imports, else why not (saq 0.26 forgets to declare typing_extensions)."""
    if system not in _IMPORT_ERRORS:
        try:
            importlib.import_module(system)
            _IMPORT_ERRORS[system] = None
        except ImportError as exc:
            _IMPORT_ERRORS[system] = f'{type(exc).__name__}: {exc}'
    return _IMPORT_ERRORS[system]


def installed(system: str) -> bool:
    return import_error(system) is None


def version_of(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return ''


def header(conn: redis.Redis, sizes: Sizes, systems: list[str]) -> dict[str, Any]:
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
            'redis-server': info.get('redis_version'),
            'redis-py': version_of('redis'),
            'hiredis': version_of('hiredis') or 'not installed',
        },
        'systems': systems,
        'sizes': asdict(sizes),
        'event_loop': 'asyncio default everywhere (aiorq worker --loop asyncio; clients asyncio.run)',
    }


# ---------------------------------------------------------------------------------------------
# Worker processes


def worker_command(system: str, url: str, kind: str, concurrency: int, burst: bool) -> list[str]:
    common = ['--url', url, '--path', str(HERE), '--logging_level', 'WARNING']
    if burst:
        common.insert(0, '--burst')
    if system == 'rq':
        return [sys.executable, '-m', 'rq.cli', 'worker', *common, '-w', 'rq.worker.SimpleWorker', QUEUE]
    if system == 'aiorq':
        return [
            sys.executable, '-m', 'aiorq_worker', 'worker', *common,
            '--concurrency', str(concurrency), '--loop', 'asyncio', QUEUE,
        ]  # fmt: skip
    cmd = [sys.executable, str(HERE / 'suite_worker.py'), system, '--url', url, '--queue', QUEUE]
    cmd += ['--kind', kind, '--concurrency', str(concurrency)]
    return cmd + (['--burst'] if burst else [])


@dataclass
class Exited:
    returncode: int
    wall: float
    cpu_s: float
    rss_mb: float
    stderr: str


class WorkerProcess:
    """A worker subprocess whose CPU and peak RSS are read with ``os.wait4`` when it exits."""

    def __init__(self, cmd: list[str]) -> None:
        self.stderr_file = tempfile.TemporaryFile(mode='w+')
        self.began = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self.stderr_file)
        # wait4's ru_maxrss is useless here: Linux carries the parent's peak RSS over the fork/exec
        # into the child's, so the peak is sampled from /proc/PID/status (VmHWM, after the exec).
        self.hwm_kb = 0
        self.sampler = threading.Thread(target=self._sample_hwm, daemon=True)
        self.sampler.start()

    def _sample_hwm(self) -> None:
        path = f'/proc/{self.proc.pid}/status'
        while self.proc.returncode is None:
            try:
                with open(path) as f:
                    for line in f:
                        if line.startswith('VmHWM:'):
                            self.hwm_kb = max(self.hwm_kb, int(line.split()[1]))
                            break
            except (OSError, ValueError):
                return
            time.sleep(0.02)

    def wait(self, timeout: float = WORKER_TIMEOUT) -> Exited:
        timer = threading.Timer(timeout, self.proc.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(self.proc.pid, 0)
        finally:
            timer.cancel()
        wall = time.monotonic() - self.began
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        self.sampler.join()
        self.stderr_file.seek(0)
        err = self.stderr_file.read()
        self.stderr_file.close()
        return Exited(self.proc.returncode, wall, usage.ru_utime + usage.ru_stime, self.hwm_kb / 1024, err)

    def stop(self, grace: float = 15.0) -> Exited:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait(grace)


def redis_snapshot(conn: redis.Redis) -> tuple[float, int]:
    info = conn.info('all')
    return float(info['used_cpu_user']) + float(info['used_cpu_sys']), int(info['total_commands_processed'])


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


async def gather_limited(n: int, one: Callable[[int], Awaitable[Any]], limit: int = IN_FLIGHT) -> list[Any]:
    sem = asyncio.Semaphore(limit)

    async def guarded(i: int) -> Any:
        async with sem:
            return await one(i)

    return list(await asyncio.gather(*(guarded(i) for i in range(n))))


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
    return asyncio.run(saq_prefill(url, 'saq_async_noop' if kind == 'async' else 'saq_noop', n))


def verify(system: str, conn: redis.Redis, url: str, ids: list[str]) -> tuple[float, float]:
    if system in ('rq', 'aiorq'):
        return rq_verify(conn, ids)
    if system == 'arq':
        return asyncio.run(arq_verify(url, ids))
    return asyncio.run(saq_verify(url, ids))


# ---------------------------------------------------------------------------------------------
# Cases 4, 5, 7, 8, 9: burst workers


def skip_saq_startup_sweep(system: str, conn: redis.Redis) -> None:
    """saq's worker sweeps its active list as it starts, concurrently with its first dequeues: a
    job moved to the active list whose status is not yet ACTIVE gets aborted as "swept" (seen in
    this suite). Taking saq's sweep lock first (as a worker that swept within the last minute
    would have) avoids that race."""
    if system == 'saq':
        conn.setex(f'saq:{QUEUE}:sweep', 600, 1)


def burst_run(
    m: Measurement, conn: redis.Redis, url: str, kind: str, n: int, concurrency: int, processes: int = 1
) -> Measurement:
    conn.flushdb()
    ids = prefill(m.system, conn, url, kind, n)
    skip_saq_startup_sweep(m.system, conn)
    cpu0, cmds0 = redis_snapshot(conn)
    cmd = worker_command(m.system, url, 'plain' if kind == 'plain' else 'async', concurrency, burst=True)
    began = time.monotonic()
    procs = [WorkerProcess(cmd) for _ in range(processes)]
    exits = [p.wait() for p in procs]
    wall = time.monotonic() - began
    cpu1, cmds1 = redis_snapshot(conn)
    m.n, m.concurrency, m.workers = n, concurrency, processes
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
    e = WorkerProcess(worker_command(m.system, url, 'async', CONCURRENCY, burst=True)).wait()
    if e.returncode != 0:
        raise RunError(f'worker exited with {e.returncode}: {e.stderr[-2000:]}')
    m.wall, m.cpu_s, m.rss_mb = e.wall, e.cpu_s, e.rss_mb
    conn.flushdb()
    return m


# ---------------------------------------------------------------------------------------------
# Cases 1-3: client enqueue


def timed_client(m: Measurement, n: int, body: Callable[[], Any]) -> Measurement:
    """``body`` runs the timed enqueues and returns (wall seconds, CPU seconds)."""
    seconds, cpu = body()
    m.n, m.seconds = n, seconds
    m.rate = n / seconds if seconds > 0 else None
    m.cpu_s = cpu
    m.cpu_us_per_job = cpu / n * 1e6
    return m


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


def queued_count(system: str, conn: redis.Redis) -> int:
    if system in ('rq', 'aiorq'):
        return int(conn.llen(f'rq:queue:{QUEUE}'))
    if system == 'arq':
        return int(conn.zcard('arq:queue'))
    return int(conn.llen(f'saq:{QUEUE}:queued'))


def enqueue_run(m: Measurement, conn: redis.Redis, url: str, n: int, mode: str) -> Measurement:
    conn.flushdb()
    if m.system == 'rq':
        body: Callable[[], tuple[float, float]] = lambda: rq_enqueue(conn, n, mode)  # noqa: E731
    else:
        coro = {'aiorq': aiorq_enqueue, 'arq': arq_enqueue, 'saq': saq_enqueue}[m.system]
        body = lambda: asyncio.run(coro(url, n, mode))  # noqa: E731
    cpu0, cmds0 = redis_snapshot(conn)
    timed_client(m, n, body)
    cpu1, cmds1 = redis_snapshot(conn)
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
# Case 6: latency


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def rq_latency(conn: redis.Redis, n: int, warmup: int) -> list[float]:
    queue = RQQueue(QUEUE, connection=conn)
    samples = []
    for i in range(-warmup, n):
        t0 = time.perf_counter()
        job = queue.enqueue(suite_jobs.noop, i)
        result = job.latest_result(timeout=30 if i < 0 else 10)
        elapsed = time.perf_counter() - t0
        if result is None or result.return_value != i:
            raise RunError(f'rq job {job.id}: result {result and result.return_value!r}, expected {i}')
        if i >= 0:
            samples.append(elapsed)
    return samples


async def aiorq_latency(url: str, n: int, warmup: int) -> list[float]:
    import redis.asyncio

    from aiorq import Queue

    conn = redis.asyncio.Redis.from_url(url)
    try:
        queue = Queue(QUEUE, connection=conn)
        samples = []
        for i in range(-warmup, n):
            t0 = time.perf_counter()
            job = await queue.enqueue(suite_jobs.noop, i)
            result = await job.latest_result(timeout=30 if i < 0 else 10)
            elapsed = time.perf_counter() - t0
            if result is None or result.return_value != i:
                raise RunError(f'aiorq job {job.id}: result {result and result.return_value!r}, expected {i}')
            if i >= 0:
                samples.append(elapsed)
        return samples
    finally:
        await conn.aclose()


async def arq_latency(url: str, n: int, warmup: int) -> list[float]:
    pool = await arq_pool(url)
    try:
        samples = []
        for i in range(-warmup, n):
            t0 = time.perf_counter()
            job = await pool.enqueue_job('arq_async_noop', i)
            value = await job.result(timeout=30 if i < 0 else 10, poll_delay=ARQ_CLIENT_POLL)
            elapsed = time.perf_counter() - t0
            if value != i:
                raise RunError(f'arq job {job.job_id}: result {value!r}, expected {i}')
            if i >= 0:
                samples.append(elapsed)
        return samples
    finally:
        await pool.aclose()


async def saq_latency(url: str, n: int, warmup: int) -> list[float]:
    queue = await saq_queue(url)
    try:
        samples = []
        for i in range(-warmup, n):
            t0 = time.perf_counter()
            value = await queue.apply('saq_async_noop', timeout=30 if i < 0 else 10, poll_interval=SAQ_CLIENT_POLL, i=i)
            elapsed = time.perf_counter() - t0
            if value != i:
                raise RunError(f'saq job: result {value!r}, expected {i}')
            if i >= 0:
                samples.append(elapsed)
        return samples
    finally:
        await queue.disconnect()


def latency_run(m: Measurement, conn: redis.Redis, url: str, n: int) -> Measurement:
    conn.flushdb()
    skip_saq_startup_sweep(m.system, conn)
    worker = WorkerProcess(worker_command(m.system, url, 'async', CONCURRENCY, burst=False))
    try:
        warmup = 3  # the first waits for the worker to start; not counted
        if m.system == 'rq':
            samples = rq_latency(conn, n, warmup)
        else:
            coro = {'aiorq': aiorq_latency, 'arq': arq_latency, 'saq': saq_latency}[m.system]
            samples = asyncio.run(coro(url, n, warmup))
    except (RunError, asyncio.TimeoutError, TimeoutError) as exc:
        e = worker.stop()
        raise RunError(f'{exc!r}; worker stderr: {e.stderr[-2000:]}') from exc
    e = worker.stop()
    m.n, m.verified = n, n
    m.p50_ms = percentile(samples, 50) * 1000
    m.p99_ms = percentile(samples, 99) * 1000
    m.max_ms = max(samples) * 1000
    m.rate = n / sum(samples)
    m.rss_mb = e.rss_mb
    conn.flushdb()
    return m


# ---------------------------------------------------------------------------------------------
# The rounds


def plan(sizes: Sizes) -> list[tuple[str, str, dict[str, Any]]]:
    """(case, system, options) for one round, systems in SYSTEMS order."""
    steps: list[tuple[str, str, dict[str, Any]]] = []
    for case, mode in (('enqueue-seq', 'seq'), ('enqueue-100', 'gather'), ('enqueue-many', 'many')):
        steps += [(case, s, {'mode': mode}) for s in SYSTEMS]
    steps += [('worker-async', s, {'kind': 'async'}) for s in SYSTEMS]
    steps += [('worker-sync', s, {'kind': 'plain'}) for s in SYSTEMS]
    steps += [('startup', s, {}) for s in SYSTEMS]
    steps += [('latency', s, {}) for s in SYSTEMS]
    steps += [('io-bound', 'aiorq', {'concurrency': c}) for c in (100, 500)]
    steps += [('scale', 'aiorq', {'processes': k}) for k in (1, 2, 4)]
    return steps


def run_step(
    case: str, system: str, opts: dict[str, Any], rnd: int, conn: redis.Redis, url: str, sizes: Sizes
) -> Measurement:
    m = Measurement(case=case, system=system, round=rnd, version=version_of(system))
    if not installed(system):
        m.status, m.version = 'not installed', ''
        if importlib.util.find_spec(system) is not None:
            m.note = f'import fails: {import_error(system)}'
        return m
    if (case, system) in NOT_APPLICABLE:
        m.status, m.note = 'n/a', NOT_APPLICABLE[(case, system)]
        return m
    try:
        if case.startswith('enqueue'):
            return enqueue_run(m, conn, url, sizes.jobs, opts['mode'])
        if case in ('worker-async', 'worker-sync'):
            return burst_run(m, conn, url, opts['kind'], sizes.jobs, CONCURRENCY)
        if case == 'startup':
            return startup_run(m, conn, url)
        if case == 'latency':
            return latency_run(m, conn, url, sizes.latency_jobs)
        if case == 'io-bound':
            c = opts['concurrency']
            burst_run(m, conn, url, 'sleep', sizes.io_jobs, c)
            if m.seconds:
                m.ideal_fraction = (sizes.io_jobs * 0.1 / c) / m.seconds
            return m
        if case == 'scale':
            return burst_run(m, conn, url, 'async', sizes.jobs, CONCURRENCY, processes=opts['processes'])
        raise AssertionError(case)
    except Exception as exc:  # a crash of one system's run is reported, not fatal
        m.status, m.note = 'FAILED', (str(exc) if isinstance(exc, RunError) else repr(exc))[:4000]
        m.rate = m.seconds = None
        m.verified = 0
        conn.flushdb()
        return m


def rotated(steps: list[tuple[str, str, dict[str, Any]]], rnd: int) -> list[tuple[str, str, dict[str, Any]]]:
    """The same steps with the order of the systems within each case rotated by the round."""
    out: list[tuple[str, str, dict[str, Any]]] = []
    i = 0
    while i < len(steps):
        j = i
        while j < len(steps) and steps[j][0] == steps[i][0]:
            j += 1
        group = steps[i:j]
        k = rnd % len(group)
        out += group[k:] + group[:k]
        i = j
    return out


# ---------------------------------------------------------------------------------------------
# Reporting


Column = tuple[str, int, Callable[[dict[str, Any]], str]]


def median(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def fmt(v: float | None, spec: str = '.1f') -> str:
    return '-' if v is None else format(v, spec)


def row_key(m: Measurement) -> tuple[str, str, int | None, int | None]:
    return (m.case, m.system, m.concurrency if m.case == 'io-bound' else None, m.workers if m.case == 'scale' else None)


def summarize(results: list[Measurement]) -> list[dict[str, Any]]:
    """One summary per (case, system[, concurrency/workers]): medians over the rounds."""
    groups: dict[tuple[str, str, int | None, int | None], list[Measurement]] = {}
    for m in results:
        if m.case == 'io-bound' and m.concurrency is None:
            continue
        groups.setdefault(row_key(m), []).append(m)
    out = []
    fields = ['rate', 'seconds', 'wall', 'cpu_us_per_job', 'cpu_s', 'redis_cpu_us_per_job', 'cmds_per_job',
              'rss_mb', 'p50_ms', 'p99_ms', 'max_ms', 'ideal_fraction']  # fmt: skip
    for (case, system, conc, workers), ms in groups.items():
        ok = [m for m in ms if m.status == 'ok']
        failed = [m for m in ms if m.status == 'FAILED']
        s: dict[str, Any] = {
            'type': 'summary', 'case': case, 'system': system, 'version': ms[0].version,
            'concurrency': conc if conc is not None else ms[0].concurrency, 'workers': workers,
            'n': ms[0].n or max((m.n for m in ms), default=0), 'rounds_ok': len(ok), 'rounds_failed': len(failed),
            'status': 'FAILED' if failed else (ms[0].status if not ok else 'ok'),
            'note': failed[0].note if failed else ms[0].note,
        }  # fmt: skip
        for f in fields:
            s[f] = median([getattr(m, f) for m in ok])
        if case in ('worker-async', 'worker-sync', 'startup', 'io-bound', 'scale', 'enqueue-seq'):
            s['rates_by_round'] = [m.rate for m in ok]
        out.append(s)
    return out


def status_cell(s: dict[str, Any]) -> str:
    if s['status'] == 'FAILED':
        return f'FAILED {s["rounds_failed"]}/{s["rounds_ok"] + s["rounds_failed"]}'
    return s['status']


def render(summaries: list[dict[str, Any]], results: list[Measurement], sizes: Sizes, head: dict[str, Any]) -> str:
    out: list[str] = []
    v = head['versions']
    out.append(
        f'CPUs {head["cpu_count"]}, load {head["loadavg"]}, Python {head["python"]}, '
        f'redis-server {v["redis-server"]}, aiorq {v["aiorq"]}, rq {v["rq"]}, arq {v["arq"]}, saq {v["saq"]}, '
        f'redis-py {v["redis-py"]}, hiredis {v["hiredis"]}'
    )
    out.append(f'{sizes.rounds} round(s), median shown; event loop: {head["event_loop"]}')
    by_case: dict[str, list[dict[str, Any]]] = {}
    for s in summaries:
        by_case.setdefault(s['case'], []).append(s)
    startup = {s['system']: s for s in by_case.get('startup', [])}

    def table(
        title: str, cols: list[tuple[str, int, Callable[[dict[str, Any]], str]]], rows: list[dict[str, Any]]
    ) -> None:
        if not rows:  # a case left out with --only
            return
        out.append('')
        out.append(f'== {title} ==')
        head_line = '  '.join(f'{name:<{w}}' if i == 0 else f'{name:>{w}}' for i, (name, w, _) in enumerate(cols))
        out.append(head_line)
        out.append('-' * len(head_line))
        notes = []
        for s in rows:
            if s['status'] in ('n/a', 'not installed'):
                out.append(f'{cols[0][2](s):<{cols[0][1]}}  {s["status"]}' + (f' ({s["note"]})' if s['note'] else ''))
                continue
            cells = [f(s) for _, _, f in cols]
            out.append(
                '  '.join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, (_, w, _)) in enumerate(zip(cells, cols)))
            )
            if s['status'] == 'FAILED':
                notes.append(f'  {s["system"]}: FAILED: {s["note"][:300]}')
        out.extend(notes)

    def system_label(s: dict[str, Any]) -> str:
        if s['system'] == 'rq' and s['case'] in ('worker-async', 'worker-sync', 'latency', 'startup'):
            return 'rq SimpleWorker'
        return s['system']

    common: list[Column] = [('system', 16, system_label), ('version', 8, lambda s: str(s['version'] or '-'))]
    status = ('status', 10, status_cell)
    for case in ('enqueue-seq', 'enqueue-100', 'enqueue-many'):
        table(f'{CASES[case]}, N={sizes.jobs}', common + [
            ('jobs/s', 9, lambda s: fmt(s['rate'], '.0f')),
            ('client CPU us/job', 17, lambda s: fmt(s['cpu_us_per_job'])),
            ('redis CPU us/job', 16, lambda s: fmt(s['redis_cpu_us_per_job'])),
            ('cmds/job', 8, lambda s: fmt(s['cmds_per_job'], '.2f')),
            status,
        ], by_case.get(case, []))  # fmt: skip

    def net(s: dict[str, Any]) -> str:
        st = startup.get(s['system'])
        if st is None or st['cpu_s'] is None or s['cpu_us_per_job'] is None or not s['n']:
            return '-'
        return fmt(s['cpu_us_per_job'] - st['cpu_s'] / s['n'] * 1e6)

    worker_cols = common + [
        ('jobs/s', 8, lambda s: fmt(s['rate'], '.0f')),
        ('first->last s', 13, lambda s: fmt(s['seconds'], '.3f')),
        ('wall s', 7, lambda s: fmt(s['wall'], '.2f')),
        ('wrk CPU us/job', 14, lambda s: fmt(s['cpu_us_per_job'])),
        ('net us/job', 10, net),
        ('redis CPU us/job', 16, lambda s: fmt(s['redis_cpu_us_per_job'])),
        ('cmds/job', 8, lambda s: fmt(s['cmds_per_job'], '.2f')),
        ('RSS MB', 7, lambda s: fmt(s['rss_mb'])),
        status,
    ]
    for case in ('worker-async', 'worker-sync'):
        table(f'{CASES[case]}, N={sizes.jobs}', worker_cols, by_case.get(case, []))
    table(CASES['startup'], common + [
        ('wall s', 7, lambda s: fmt(s['wall'], '.2f')),
        ('CPU s', 6, lambda s: fmt(s['cpu_s'], '.3f')),
        ('RSS MB', 7, lambda s: fmt(s['rss_mb'])),
        status,
    ], by_case.get('startup', []))  # fmt: skip
    table(f'{CASES["latency"]}, N={sizes.latency_jobs}', common + [
        ('p50 ms', 7, lambda s: fmt(s['p50_ms'], '.2f')),
        ('p99 ms', 7, lambda s: fmt(s['p99_ms'], '.2f')),
        ('max ms', 7, lambda s: fmt(s['max_ms'], '.2f')),
        ('jobs/s', 7, lambda s: fmt(s['rate'], '.0f')),
        status,
    ], by_case.get('latency', []))  # fmt: skip
    table(f'{CASES["io-bound"]}, N={sizes.io_jobs}', [
        ('system', 16, lambda s: f'aiorq c={s["concurrency"]}'),
        ('ideal s', 7, lambda s: fmt(sizes.io_jobs * 0.1 / s['concurrency'], '.2f')),
        ('first->last s', 13, lambda s: fmt(s['seconds'], '.3f')),
        ('jobs/s', 8, lambda s: fmt(s['rate'], '.0f')),
        ('of ideal', 8, lambda s: fmt(None if s['ideal_fraction'] is None else s['ideal_fraction'] * 100, '.1f') + '%'),
        ('wrk CPU us/job', 14, lambda s: fmt(s['cpu_us_per_job'])),
        ('redis CPU us/job', 16, lambda s: fmt(s['redis_cpu_us_per_job'])),
        status,
    ], by_case.get('io-bound', []))  # fmt: skip
    table(f'{CASES["scale"]}, N={sizes.jobs}', [
        ('workers', 16, lambda s: f'aiorq x{s["workers"]}'),
        ('jobs/s', 8, lambda s: fmt(s['rate'], '.0f')),
        ('first->last s', 13, lambda s: fmt(s['seconds'], '.3f')),
        ('wrk CPU us/job', 14, lambda s: fmt(s['cpu_us_per_job'])),
        ('redis CPU us/job', 16, lambda s: fmt(s['redis_cpu_us_per_job'])),
        ('cmds/job', 8, lambda s: fmt(s['cmds_per_job'], '.2f')),
        status,
    ], by_case.get('scale', []))  # fmt: skip

    out.append('')
    out.append('== Ratios within this run (per round, then the median) ==')
    for case, label in (('worker-async', 'async def'), ('worker-sync', 'plain')):
        ratios = round_ratios(results, case)
        if ratios:
            per = ', '.join(f'{r:.2f}' for r in ratios)
            out.append(
                f'{label}: aiorq/rq SimpleWorker throughput ratio {statistics.median(ratios):.2f}x (rounds: {per})'
            )
    verified = sum(m.verified for m in results)
    runs = sum(1 for m in results if m.verified)
    failed = [m for m in results if m.status == 'FAILED']
    out.append('')
    out.append(f'verified: {runs} runs, {verified} jobs checked (every result == its argument, nothing left queued)')
    if failed:
        out.append(
            f'FAILED runs: {len(failed)} (' + ', '.join(f'{m.case}/{m.system} round {m.round}' for m in failed) + ')'
        )
    return '\n'.join(out)


def round_ratios(results: list[Measurement], case: str) -> list[float]:
    out = []
    for rnd in sorted({m.round for m in results}):
        by = {m.system: m for m in results if m.case == case and m.round == rnd and m.status == 'ok'}
        if 'aiorq' in by and 'rq' in by and by['aiorq'].rate and by['rq'].rate:
            out.append(by['aiorq'].rate / by['rq'].rate)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--rounds', type=int, default=3, help='rounds, median reported (default 3)')
    parser.add_argument('--jobs', type=int, default=5000, help='jobs per throughput/enqueue run (default 5000)')
    parser.add_argument('--io-jobs', type=int, default=2000, help='jobs per I/O-bound run (default 2000)')
    parser.add_argument('--latency-jobs', type=int, default=200, help='sequential jobs per latency run (default 200)')
    parser.add_argument('--quick', action='store_true', help='a smoke test: 200/200/20 jobs, 1 round')
    parser.add_argument('--only', default='', help=f'comma-separated cases among {", ".join(CASES)}')
    parser.add_argument('--json', default=str(HERE / 'results.jsonl'), help='JSON lines output (default %(default)s)')
    args = parser.parse_args(argv)
    sizes = Sizes(args.jobs, args.io_jobs, args.latency_jobs, args.rounds)
    if args.quick:
        sizes = Sizes(200, 200, 20, 1)
    if min(sizes.jobs, sizes.io_jobs, sizes.latency_jobs, sizes.rounds) < 1:
        parser.error('sizes and rounds must be at least 1')
    only = {c for c in args.only.split(',') if c}
    if only - set(CASES):
        parser.error(f'unknown case(s): {", ".join(sorted(only - set(CASES)))}')

    server = RedisServer()
    results: list[Measurement] = []
    try:
        conn = redis.Redis.from_url(server.url)
        head = header(conn, sizes, [s for s in SYSTEMS if installed(s)])
        steps = [s for s in plan(sizes) if not only or s[0] in only]
        with open(args.json, 'w') as out:
            out.write(json.dumps(head) + '\n')
            for rnd in range(1, sizes.rounds + 1):
                for case, system, opts in rotated(steps, rnd - 1):
                    m = run_step(case, system, opts, rnd, conn, server.url, sizes)
                    results.append(m)
                    out.write(json.dumps({'type': 'measurement', **asdict(m)}) + '\n')
                    out.flush()
                    if m.status in ('ok', 'FAILED'):
                        extra = (
                            f' c={m.concurrency}' if case == 'io-bound' else f' x{m.workers}' if case == 'scale' else ''
                        )
                        what = m.status if m.status != 'ok' else (
                            f'p50 {m.p50_ms:.2f} ms' if m.p50_ms is not None
                            else f'{fmt(m.rate, ".0f")} jobs/s' if m.rate is not None
                            else f'CPU {fmt(m.cpu_s, ".3f")} s'
                        )  # fmt: skip
                        print(f'... round {rnd} {case} {system}{extra}: {what}', file=sys.stderr, flush=True)
            summaries = summarize(results)
            for s in summaries:
                out.write(json.dumps(s) + '\n')
        conn.close()
    finally:
        server.stop()
    print(render(summaries, results, sizes, head))
    print(f'\nJSON lines: {args.json}')
    return 1 if any(m.status == 'FAILED' for m in results) else 0


if __name__ == '__main__':
    sys.exit(main())
