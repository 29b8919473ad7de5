"""The latency cases of ``benchmarks/suite.py``: enqueue -> result on a worker that is already
running (not burst), one job at a time, each client waiting for the result its own way.

``latency-back-to-back`` sends the next job the moment the client holds the last result, so the
worker is never idle when a job arrives. ``latency-idle`` (the independent way) leaves a random
gap of 5-15 ms (seeded: the same gaps for every system) between a result and the next enqueue, so
every job finds the worker idle, blocked in its dequeue.

Each sample is timed from just before the enqueue to the moment the client holds the checked
result. The ways of waiting (the ``variant`` column):

- aiorq: ``await job.latest_result(timeout=...)`` (a blocking ``XREAD`` on the job's results stream)
  and ``await job.wait(timeout=...)`` (status and newest result read together, then the same
  blocking ``XREAD``).
- rq: ``job.latest_result(timeout=...)`` (the same blocking ``XREAD``, sync, in the suite's process).
- arq: ``await job.result(poll_delay=...)``: 0.01 s back to back (as before), 0.001 s when idle.
- saq: back to back ``await queue.apply(..., poll_interval=0.01)`` (as before; ``apply`` sleeps one
  poll interval even after it saw the result); when idle both ``await job.refresh(until_complete=1)``
  (saq's pub/sub: it reads the job, then subscribes, so a notification sent in between is never
  seen: the client then waits the whole second; counted in the ``missed`` column) and a loop of
  ``await job.refresh()`` every 1 ms.
- streaQ: ``await task.result(timeout=...)`` (subscribes to the task's channel, then reads the
  result key, then waits for the message: nothing can be missed; but leaving coredis's pub/sub
  context waits out its ``unsubscription_timeout`` of 0.1 s every time, so each result is held
  about 100 ms after it arrived); when idle also a loop of ``GET`` on the task's result key
  (``worker.results_key + task.id``) every 1 ms, the way round that.

The job is a no-op: an ``async def`` one for aiorq (idle case), arq, saq and streaQ; a plain one for
rq (its worker would run a coroutine function under ``asyncio.run`` per job) and for aiorq back to
back (as in the results before the idle case existed). Every client runs on asyncio's own loop; the
worker on the loop of the run.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import redis
import suite_jobs
from rq import Queue as RQQueue
from suite_core import CONCURRENCY, QUEUE, Measurement, RunError, WorkerProcess, worker_command

GAP_MIN = 0.005
GAP_MAX = 0.015
WARMUP = 3  # the first jobs wait for the worker to start; not counted
FIRST_TIMEOUT = 30.0
TIMEOUT = 10.0
ARQ_POLL = {'latency-back-to-back': 0.01, 'latency-idle': 0.001}
SAQ_APPLY_POLL = 0.01
SAQ_POLL = 0.001
SAQ_PUBSUB_WAIT = 1.0
STREAQ_POLL = 0.001

# The ways each system's client waits, per case (one table row each).
VARIANTS: dict[tuple[str, str], tuple[str, ...]] = {
    ('latency-back-to-back', 'aiorq'): ('latest_result',),
    ('latency-back-to-back', 'rq'): ('latest_result',),
    ('latency-back-to-back', 'arq'): ('result(poll 10 ms)',),
    ('latency-back-to-back', 'saq'): ('apply(poll 10 ms)',),
    ('latency-back-to-back', 'streaq'): ('result() pub/sub',),
    ('latency-idle', 'aiorq'): ('latest_result', 'wait'),
    ('latency-idle', 'rq'): ('latest_result',),
    ('latency-idle', 'arq'): ('result(poll 1 ms)',),
    ('latency-idle', 'saq'): ('refresh pub/sub', 'poll 1 ms'),
    ('latency-idle', 'streaq'): ('result() pub/sub', 'poll 1 ms'),
}

One = Callable[[int, float], Awaitable[None]]


class Counter:
    """Missed pub/sub notifications of one run (saq)."""

    def __init__(self) -> None:
        self.missed = 0


def gaps(case: str, count: int, seed: int) -> list[float]:
    """The idle time before each job: none back to back, else 5-15 ms drawn from ``seed``."""
    if case != 'latency-idle':
        return [0.0] * count
    rng = random.Random(seed)
    return [rng.uniform(GAP_MIN, GAP_MAX) for _ in range(count)]


def check(system: str, job_id: str, value: Any, i: int) -> None:
    if value != i:
        raise RunError(f'{system} job {job_id}: result {value!r}, expected {i}')


# ---------------------------------------------------------------------------------------------
# One job: enqueue, wait, check (per system and variant)


@asynccontextmanager
async def aiorq_one(url: str, case: str, variant: str, counter: Counter) -> AsyncIterator[One]:
    import redis.asyncio

    from aiorq import Queue

    func = suite_jobs.async_noop if case == 'latency-idle' else suite_jobs.noop
    conn = redis.asyncio.Redis.from_url(url)
    queue = Queue(QUEUE, connection=conn)

    async def one(i: int, timeout: float) -> None:
        job = await queue.enqueue(func, i)
        if variant == 'wait':
            value = await job.wait(timeout=timeout)
        else:
            result = await job.latest_result(timeout=timeout)
            value = None if result is None else result.return_value
        check('aiorq', job.id, value, i)

    try:
        yield one
    finally:
        await conn.aclose()


@asynccontextmanager
async def arq_one(url: str, case: str, variant: str, counter: Counter) -> AsyncIterator[One]:
    from arq.connections import RedisSettings, create_pool

    pool = await create_pool(RedisSettings.from_dsn(url))

    async def one(i: int, timeout: float) -> None:
        job = await pool.enqueue_job('arq_async_noop', i)
        assert job is not None
        check('arq', job.job_id, await job.result(timeout=timeout, poll_delay=ARQ_POLL[case]), i)

    try:
        yield one
    finally:
        await pool.aclose()


@asynccontextmanager
async def saq_one(url: str, case: str, variant: str, counter: Counter) -> AsyncIterator[One]:
    from saq import Queue
    from saq.job import TERMINAL_STATUSES

    queue = Queue.from_url(url, name=QUEUE)
    await queue.connect()

    async def apply(i: int, timeout: float) -> None:
        value = await queue.apply('saq_async_noop', timeout=timeout, poll_interval=SAQ_APPLY_POLL, i=i)
        check('saq', '-', value, i)

    async def refresh(i: int, timeout: float) -> None:
        job = await queue.enqueue('saq_async_noop', i=i)
        assert job is not None
        deadline = time.monotonic() + timeout
        if variant == 'poll 1 ms':
            await job.refresh()
            while job.status not in TERMINAL_STATUSES and time.monotonic() < deadline:
                await asyncio.sleep(SAQ_POLL)
                await job.refresh()
        else:
            try:
                await job.refresh(until_complete=min(timeout, SAQ_PUBSUB_WAIT))
            except asyncio.TimeoutError:  # the notification came before saq subscribed
                counter.missed += 1
                await job.refresh()
        check('saq', job.key, job.result if job.status in TERMINAL_STATUSES else None, i)

    try:
        yield apply if case == 'latency-back-to-back' else refresh
    finally:
        await queue.disconnect()


@asynccontextmanager
async def streaq_one(url: str, case: str, variant: str, counter: Counter) -> AsyncIterator[One]:
    from suite_streaq import make_worker

    worker, task, _ = make_worker(url)

    async def one(i: int, timeout: float) -> None:
        submitted = await task.enqueue(i)
        if variant == 'poll 1 ms':
            key, deadline = worker.results_key + submitted.id, time.monotonic() + timeout
            while (raw := await worker.redis.get(key)) is None and time.monotonic() < deadline:
                await asyncio.sleep(STREAQ_POLL)
            data = None if raw is None else await worker.deserialize(raw)
            check('streaQ', submitted.id, data['r'] if data and data['s'] else None, i)
        else:
            result = await submitted.result(timeout=timeout)
            check('streaQ', submitted.id, result.result if result.success else None, i)

    async with worker:
        yield one


CLIENTS = {'aiorq': aiorq_one, 'arq': arq_one, 'saq': saq_one, 'streaq': streaq_one}


# ---------------------------------------------------------------------------------------------
# The runs


async def async_samples(m: Measurement, url: str, n: int, pauses: list[float], counter: Counter) -> list[float]:
    samples = []
    async with CLIENTS[m.system](url, m.case, m.variant, counter) as one:
        for k, i in enumerate(range(-WARMUP, n)):
            if pauses[k]:
                await asyncio.sleep(pauses[k])
            t0 = time.perf_counter()
            await one(i, FIRST_TIMEOUT if i < 0 else TIMEOUT)
            if i >= 0:
                samples.append(time.perf_counter() - t0)
    return samples


def rq_samples(conn: redis.Redis, n: int, pauses: list[float]) -> list[float]:
    queue = RQQueue(QUEUE, connection=conn)
    samples = []
    for k, i in enumerate(range(-WARMUP, n)):
        if pauses[k]:
            time.sleep(pauses[k])
        t0 = time.perf_counter()
        job = queue.enqueue(suite_jobs.noop, i)
        result = job.latest_result(timeout=int(FIRST_TIMEOUT if i < 0 else TIMEOUT))
        elapsed = time.perf_counter() - t0
        check('rq', job.id, None if result is None else result.return_value, i)
        if i >= 0:
            samples.append(elapsed)
    return samples


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def latency_run(m: Measurement, conn: redis.Redis, url: str, n: int, seed: int) -> Measurement:
    """One latency run of ``m.system`` / ``m.variant`` with a fresh worker on ``m.loop``."""
    conn.flushdb()
    if m.system == 'saq':  # saq's start-up sweep races with the first jobs (see suite.py)
        conn.setex(f'saq:{QUEUE}:sweep', 600, 1)
    plain = m.system == 'rq' or (m.system == 'aiorq' and m.case == 'latency-back-to-back')
    cmd = worker_command(m.system, url, 'plain' if plain else 'async', CONCURRENCY, burst=False, loop=m.loop)
    worker = WorkerProcess(cmd)
    pauses = gaps(m.case, WARMUP + n, seed)
    counter = Counter()
    try:
        if m.system == 'rq':
            samples = rq_samples(conn, n, pauses)
        else:
            samples = asyncio.run(async_samples(m, url, n, pauses, counter))
    except Exception as exc:  # whatever the client raised, the worker is stopped and its stderr shown
        e = worker.stop()
        raise RunError(f'{exc!r}; worker stderr: {e.stderr[-2000:]}') from exc
    e = worker.stop()
    m.n, m.verified = n, n
    m.p50_ms, m.p90_ms, m.p99_ms = (percentile(samples, p) * 1000 for p in (50, 90, 99))
    m.max_ms = max(samples) * 1000
    m.rate = n / sum(samples) if m.case == 'latency-back-to-back' else None
    m.missed = counter.missed if m.system == 'saq' and m.variant == 'refresh pub/sub' else None
    m.rss_mb = e.rss_mb
    conn.flushdb()
    return m
