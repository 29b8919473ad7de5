"""A soak: a mixed fleet (stock ``rq worker`` forking, stock ``SimpleWorker`` with the scheduler,
two ``aiorq worker -s --concurrency 16``) serves one queue while jobs of every kind keep coming:
plain and coroutine functions, failures with and without ``Retry``, jobs that fail once and are
retried after an interval (through the scheduled registry), parent → child chains, and jobs
scheduled with ``enqueue_in``; half enqueued by stock rq, half by aiorq.

Every second, one atomic snapshot of the queue's lists and registries (a Lua script) is checked:
no job in two places at once; the places add up to every job enqueued so far (none lost); and
nothing stuck (no job started, ready, waiting or overdue for longer than it can take). At the end
every job is terminal, ran exactly as many times as its kind says, sits in the right registry,
and the workers' counters add up. The aiorq workers' resident memory is sampled throughout.

The default run is short (``AIORQ_SOAK_SECONDS``, 15 s of enqueueing). ``AIORQ_SOAK=1`` runs the
real soak: ``AIORQ_SOAK_SECONDS`` (default 300) and at least ``AIORQ_SOAK_JOBS`` (default 100,000)
jobs, and then also requires the aiorq workers' memory to stay flat after the warm-up.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import redis
import rq
import tasks
from faultkit import Server, aiorq_worker, rq_worker, wait_for
from processes import Processes
from redis.asyncio import Redis
from rq.command import send_shutdown_command
from rq.worker import Worker as RQWorker

import aiorq

QUEUE = 'soak'
FULL = os.environ.get('AIORQ_SOAK') == '1'
SECONDS = float(os.environ.get('AIORQ_SOAK_SECONDS', 300 if FULL else 15))
MIN_JOBS = int(os.environ.get('AIORQ_SOAK_JOBS', 100_000 if FULL else 0))
BACKLOG = 2000  # the enqueuer waits while the queue holds more
STUCK = 60.0  # seconds: longer than any job may rightly wait anywhere but in the finished/failed registries
RSS_SLACK_KB = 16 * 1024  # growth allowed after the warm-up (allocator noise, caches filling up)

# Runs per job of each kind, and where it ends.
RUNS = {'plain': 1, 'coro': 1, 'fail': 1, 'fail_retry': 2, 'flaky': 2, 'parent': 1, 'child': 1, 'scheduled': 1}
FAILS = {'fail', 'fail_retry'}
FAILED_RUNS = {'fail': 1, 'fail_retry': 2, 'flaky': 1}

# One atomic snapshot. KEYS: queue, intermediate, wip, deferred, scheduled, ready, finished,
# failed. Returns the small places' members (scheduled with scores), the two terminal registries'
# sizes, and the ids found both in a small place and in a terminal registry.
SNAPSHOT = """
local q = redis.call('LRANGE', KEYS[1], 0, -1)
local i = redis.call('LRANGE', KEYS[2], 0, -1)
local w = redis.call('ZRANGE', KEYS[3], 0, -1)
local d = redis.call('ZRANGE', KEYS[4], 0, -1)
local s = redis.call('ZRANGE', KEYS[5], 0, -1, 'WITHSCORES')
local r = redis.call('ZRANGE', KEYS[6], 0, -1)
local both = {}
local function check(ids, strip)
    for _, m in ipairs(ids) do
        local id = m
        if strip then id = string.match(m, '^(.+):[^:]+$') or m end
        if redis.call('ZSCORE', KEYS[7], id) or redis.call('ZSCORE', KEYS[8], id) then
            table.insert(both, id)
        end
    end
end
check(q, false); check(i, false); check(w, true); check(d, false); check(r, false)
for n = 1, #s, 2 do check({s[n]}, false) end
return {q, i, w, d, s, r, redis.call('ZCARD', KEYS[7]), redis.call('ZCARD', KEYS[8]), both}
"""


@dataclass
class Ledger:
    """What the test enqueued, and what it saw of each job."""

    kinds: dict[str, str] = field(default_factory=dict)  # id -> kind
    seen: dict[str, tuple[str, float]] = field(default_factory=dict)  # id -> (place, since)
    checks: int = 0
    violations: list[str] = field(default_factory=list)
    rss: dict[int, list[tuple[float, int, int]]] = field(default_factory=dict)  # pid -> (t, jobs, kB)

    def add(self, job_id: str, kind: str) -> None:
        self.kinds[job_id] = kind


def rss_kb(pid: int) -> int:
    for line in Path(f'/proc/{pid}/status').read_text().splitlines():
        if line.startswith('VmRSS:'):
            return int(line.split()[1])
    raise RuntimeError(f'no VmRSS for {pid}')


def check(conn: redis.Redis, ledger: Ledger, now: float) -> None:
    """One snapshot against the invariants; violations are collected (the test fails on any)."""
    keys = [
        f'rq:queue:{QUEUE}',
        f'rq:queue:{QUEUE}:intermediate',
        f'rq:wip:{QUEUE}',
        f'rq:deferred:{QUEUE}',
        f'rq:scheduled:{QUEUE}',
        f'rq:ready:{QUEUE}',
        f'rq:finished:{QUEUE}',
        f'rq:failed:{QUEUE}',
    ]
    q, i, w, d, s, r, finished, failed, both = conn.eval(SNAPSHOT, len(keys), *keys)
    ledger.checks += 1
    dec = [[x.decode() for x in part] for part in (q, i, d, r)]
    queued, intermediate, deferred, ready = dec
    started = [m.decode().rsplit(':', 1)[0] for m in w]
    scheduled = {s[n].decode(): float(s[n + 1]) for n in range(0, len(s), 2)}
    problems = []
    if both:
        problems.append(f'in a terminal registry and elsewhere: {[b.decode() for b in both][:5]}')
    places = {'queued': queued, 'started': started, 'deferred': deferred, 'ready': ready, 'scheduled': list(scheduled)}
    for name, ids in places.items():
        dup = [x for x, n in Counter(ids).items() if n > 1]
        if dup:
            problems.append(f'twice in {name}: {dup[:5]}')
    owner: dict[str, str] = {}
    for name, ids in places.items():
        for x in ids:
            if x in owner:
                problems.append(f'{x} both {owner[x]} and {name}')
            owner[x] = name
    for x in intermediate:
        # Between a stock worker's pop and its horse's start an id is in both lists; nowhere
        # else may it be at the same time.
        if x in owner and owner[x] != 'started':
            problems.append(f'{x} both intermediate and {owner[x]}')
        owner.setdefault(x, 'intermediate')
    unknown = [x for x in owner if x not in ledger.kinds]
    if unknown:
        problems.append(f'unknown ids: {unknown[:5]}')
    if len(owner) + finished + failed != len(ledger.kinds):
        problems.append(
            f'counts: {len(owner)} waiting or running + {finished} finished + {failed} failed '
            f'!= {len(ledger.kinds)} enqueued'
        )
    # Nothing stuck: how long each id has been in its current place.
    current: dict[str, tuple[str, float]] = {}
    for x, place in owner.items():
        before = ledger.seen.get(x)
        since = before[1] if before and before[0] == place else now
        current[x] = (place, since)
        overdue = place == 'scheduled' and scheduled[x] < now - STUCK
        if overdue or (place != 'scheduled' and now - since > STUCK):
            problems.append(f'{x} ({ledger.kinds.get(x)}) {place} for {now - since:.0f}s')
    ledger.seen = current
    ledger.violations += [f'check {ledger.checks}: {p}' for p in problems]


async def enqueue_batch(
    rng: random.Random, ledger: Ledger, aq: aiorq.Queue, sq: rq.Queue, client: str, size: int
) -> None:
    """One batch of ``size`` jobs of every kind through one client (stock rq or aiorq)."""
    specs: list[tuple[str, Any]] = []
    for _ in range(size):
        roll = rng.random()
        if roll < 0.40:
            specs.append(('plain', rq.Queue.prepare_data(tasks.record_add, (1, 2), result_ttl=3600)))
        elif roll < 0.70:
            specs.append(('coro', rq.Queue.prepare_data(tasks.record_async_add, (1, 2), result_ttl=3600)))
        elif roll < 0.75:
            specs.append(('fail', rq.Queue.prepare_data(tasks.record_fail, ('planned',))))
        elif roll < 0.80:
            retry = rq.Retry(max=1)
            specs.append(('fail_retry', rq.Queue.prepare_data(tasks.record_fail, ('planned',), retry=retry)))
        elif roll < 0.85:
            retry = rq.Retry(max=2, interval=1)
            specs.append(('flaky', rq.Queue.prepare_data(tasks.fail_first_attempt, retry=retry, result_ttl=3600)))
        elif roll < 0.95:
            specs.append(('chain', None))
        else:
            specs.append(('scheduled', None))
    many = [data for kind, data in specs if data is not None]
    kinds = [kind for kind, data in specs if data is not None]
    if client == 'rq':
        jobs: list[Any] = sq.enqueue_many(many)
    else:
        jobs = await aq.enqueue_many(many)
    for job, kind in zip(jobs, kinds):
        ledger.add(job.id, kind)
    for kind, _ in specs:
        if kind == 'chain':
            if client == 'rq':
                parent = sq.enqueue(tasks.record_add, 3, 4, result_ttl=3600)
                child = sq.enqueue(tasks.record_add, 5, 6, depends_on=parent, result_ttl=3600)
            else:
                parent = await aq.enqueue(tasks.record_async_add, 3, 4, result_ttl=3600)
                child = await aq.enqueue(tasks.record_add, 5, 6, depends_on=parent.id, result_ttl=3600)
            ledger.add(parent.id, 'parent')
            ledger.add(child.id, 'child')
        elif kind == 'scheduled':
            delay = timedelta(seconds=rng.randint(1, 3))
            if client == 'rq':
                job = sq.enqueue_in(delay, tasks.record_add, 7, 8, result_ttl=3600)
            else:
                job = await aq.enqueue_in(delay, tasks.record_async_add, 7, 8, result_ttl=3600)
            ledger.add(job.id, 'scheduled')


def statuses(conn: redis.Redis, ids: list[str]) -> list[str | None]:
    out: list[str | None] = []
    for start in range(0, len(ids), 5000):
        with conn.pipeline(transaction=False) as pipe:
            for job_id in ids[start : start + 5000]:
                pipe.hget(f'rq:job:{job_id}', 'status')
            out += [None if x is None else x.decode() for x in pipe.execute()]
    return out


def jobs_done(conn: redis.Redis, name: str) -> int:
    raw = conn.hmget(f'rq:worker:{name}', 'successful_job_count', 'failed_job_count')
    return sum(int(x or 0) for x in raw)


async def test_soak_mixed_fleet(fault_redis: Callable[..., Server], processes: Processes) -> None:
    server = fault_redis()
    conn = server.client()
    url = server.url()
    maintenance = ['--maintenance-interval', '1', '--worker-ttl', '16']
    processes.start('rq-fork', rq_worker(url, *maintenance, '--name', 'rq-fork', QUEUE))
    processes.start(
        'rq-simple',
        rq_worker(url, *maintenance, '-w', 'rq.worker.SimpleWorker', '--with-scheduler', '--name', 'rq-simple', QUEUE),
    )
    aiorq_names = ['aiorq-1', 'aiorq-2']
    aiorq_procs = [
        processes.start(name, aiorq_worker(url, *maintenance, '-s', '--concurrency', '16', '--name', name, QUEUE))
        for name in aiorq_names
    ]
    names = ['rq-fork', 'rq-simple', *aiorq_names]
    wait_for(
        lambda: sorted(w.name for w in RQWorker.all(connection=conn) if w.state == 'idle') == sorted(names),
        30,
        processes.logs,
    )

    ledger = Ledger(rss={p.pid: [] for p in aiorq_procs})
    rng = random.Random(20260101)
    client = Redis.from_url(url)
    aq = aiorq.Queue(QUEUE, connection=client)
    sq = rq.Queue(QUEUE, connection=conn)
    began = time.monotonic()
    last_check = 0.0
    batches = 0
    try:
        while time.monotonic() - began < SECONDS or len(ledger.kinds) < MIN_JOBS:
            assert time.monotonic() - began < SECONDS * 3 + 60, f'{len(ledger.kinds)} jobs enqueued: too slow'
            if conn.llen(f'rq:queue:{QUEUE}') < BACKLOG:
                await enqueue_batch(rng, ledger, aq, sq, 'rq' if batches % 2 else 'aiorq', 200)
                batches += 1
            else:
                await asyncio.sleep(0.02)
            now = time.monotonic()
            if now - last_check >= 1.0:
                last_check = now
                check(conn, ledger, time.time())
                for proc, name in zip(aiorq_procs, aiorq_names):
                    ledger.rss[proc.pid].append((now - began, jobs_done(conn, name), rss_kb(proc.pid)))
                assert all(p.poll() is None for _, p, _, _ in processes.procs.values()), processes.logs()
                assert not ledger.violations, '\n'.join(ledger.violations[:20])
        enqueued_for = time.monotonic() - began

        # Drain, still checking every second.
        ids = list(ledger.kinds)
        while True:
            check(conn, ledger, time.time())
            assert not ledger.violations, '\n'.join(ledger.violations[:20])
            pending = [i for i, s in zip(ids, statuses(conn, ids)) if s not in ('finished', 'failed')]
            if not pending:
                break
            assert time.monotonic() - began < enqueued_for + 120, f'{len(pending)} not terminal: {pending[:5]}'
            await asyncio.sleep(1)
        drained_for = time.monotonic() - began
        for proc, name in zip(aiorq_procs, aiorq_names):
            ledger.rss[proc.pid].append((drained_for, jobs_done(conn, name), rss_kb(proc.pid)))
    finally:
        await client.aclose()

    # Every job where its kind says, run as often as its kind says.
    expected_finished = {i for i, k in ledger.kinds.items() if k not in FAILS}
    expected_failed = {i for i, k in ledger.kinds.items() if k in FAILS}
    assert {x.decode() for x in conn.zrange(f'rq:finished:{QUEUE}', 0, -1)} == expected_finished
    assert {x.decode() for x in conn.zrange(f'rq:failed:{QUEUE}', 0, -1)} == expected_failed
    ran = Counter(x.decode() for x in conn.lrange('ran', 0, -1))
    wrong = {i: (ledger.kinds[i], ran[i]) for i in ledger.kinds if ran[i] != RUNS[ledger.kinds[i]]}
    assert not wrong, list(wrong.items())[:10]
    assert set(ran) == set(ledger.kinds)
    for key in (f'rq:queue:{QUEUE}', f'rq:queue:{QUEUE}:intermediate'):
        assert conn.llen(key) == 0, key
    for key in (f'rq:wip:{QUEUE}', f'rq:deferred:{QUEUE}', f'rq:scheduled:{QUEUE}', f'rq:ready:{QUEUE}'):
        assert conn.zcard(key) == 0, key
    # The workers' counters add up to what the jobs did, and every worker took part.
    workers = {w.name: w for w in RQWorker.all(connection=conn)}
    assert sorted(workers) == sorted(names)
    by_worker = {n: (w.successful_job_count, w.failed_job_count) for n, w in workers.items()}
    assert all(ok > 0 for ok, _ in by_worker.values()), by_worker
    assert sum(ok for ok, _ in by_worker.values()) == len(expected_finished)
    assert sum(ko for _, ko in by_worker.values()) == sum(FAILED_RUNS.get(k, 0) for k in ledger.kinds.values())

    for name in names:
        send_shutdown_command(conn, name)
    codes = processes.wait_all(60)
    assert all(code == 0 for code in codes.values()), f'{codes}\n{processes.logs()}'

    total = len(ledger.kinds)
    lines = [
        f'\nsoak: {total} jobs ({dict(Counter(ledger.kinds.values()))}) enqueued for {enqueued_for:.0f}s, '
        f'all terminal after {drained_for:.0f}s; {ledger.checks} invariant checks, 0 violations; '
        f'jobs per worker {by_worker}'
    ]
    for proc, name in zip(aiorq_procs, aiorq_names):
        samples = ledger.rss[proc.pid]
        warm = next((s for s in samples if s[1] >= samples[-1][1] // 10), samples[0])
        lines.append(
            f'  {name}: RSS {samples[0][2] / 1024:.1f} MB at start, {warm[2] / 1024:.1f} MB after {warm[1]} jobs '
            f'(t={warm[0]:.0f}s), {samples[-1][2] / 1024:.1f} MB at the end after {samples[-1][1]} jobs '
            f'(peak {max(s[2] for s in samples) / 1024:.1f} MB)'
        )
        if FULL:
            assert samples[-1][1] >= 10_000, f'{name} ran too few jobs to judge its memory'
            assert samples[-1][2] - warm[2] <= RSS_SLACK_KB, lines[-1]
    print('\n'.join(lines))
    if FULL:
        assert total >= MIN_JOBS
