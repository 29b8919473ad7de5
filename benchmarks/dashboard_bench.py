"""Issue 17's benchmark: server time of each page of aiorq's dashboard beside rq-dashboard's, on
the same rq 3.0 data with 200,000 jobs in one failed registry.

    python benchmarks/dashboard_bench.py [--quick] [--failed N] [--repeat R] [--budget S]
                                         [--write-results]

``make bench-dashboard`` runs it from its own virtualenv (``.venv-bench-dashboard``: aiorq with the
``web`` extra, httpx, rq-dashboard and the ``six`` that rq-dashboard imports without declaring it;
rq-dashboard is never a dependency of aiorq). ``--quick`` (2,000 failed jobs, 5 requests a page) is
the smoke test. It is a benchmark, not a test: the suite never runs it.

It starts a private ``redis-server`` on a free loopback port (never 6379) and fills it, pipelined,
with what stock rq 3.0 writes: 50 queues with a few queued jobs each; one job that really failed
in stock rq's ``SimpleWorker`` (its hash, its result stream with the traceback, its failed registry
entry), cloned with new ids, arguments, descriptions and times into N jobs (default 200,000) of
``queue-00``'s failed registry in pipelines of 5,000; two stock ``rq worker`` processes (one busy,
one idle) and one ``aiorq worker`` with 10 executions in flight.

Each page that both dashboards have is then requested, after one warm-up, ``--repeat`` times
(default 20; fewer when a page's samples pass ``--budget`` seconds, at least 3), in process: aiorq's
ASGI app through ``httpx.ASGITransport`` on asyncio's loop, rq-dashboard's Flask app through its
test client. rq-dashboard's pages are an HTML shell plus the JSON its script fetches at once (the
page shows nothing before both): a sample is both requests, one after the other. Per page: p50/p90
in ms, the Redis commands it made (``INFO commandstats`` deltas, commands inside Lua scripts
included, the fewest over the samples since the workers' heartbeats add a few), the round trips
(client sends: one per command, pipeline or script call), the new connections it opened and the
size of the responses.
``--write-results`` puts the table into benchmarks/RESULTS.md, between the markers of its section
"Dashboard: page server times".
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import os
import platform
import signal
import subprocess
import sys
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, cast

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import redis  # noqa: E402
from bench import RedisServer  # noqa: E402
from rq import Queue, SimpleWorker  # noqa: E402
from rq.job import Job  # noqa: E402
from rq.registry import FailedJobRegistry, StartedJobRegistry  # noqa: E402
from rq.results import Result  # noqa: E402
from rq.serializers import DefaultSerializer  # noqa: E402
from rq.worker_registration import REDIS_WORKER_KEYS  # noqa: E402

BIG = 'queue-00'  # the queue whose failed registry holds the N failed jobs
QUEUES = [f'queue-{i:02d}' for i in range(50)]
AIORQ_QUEUE, RQ_QUEUE = QUEUES[-2], QUEUES[-1]  # where the workers' long jobs run
QUEUED_PER_QUEUE = 4
IN_FLIGHT = 10  # the aiorq worker's executions
PAGE_SIZE = 50
CHUNK = 5_000  # jobs per fill pipeline
SLEEP = 3600  # the workers' jobs outlast the run; the workers are stopped at the end
RESULTS = HERE / 'RESULTS.md'
HEADING = '## Dashboard: page server times'
BEGIN, END = '<!-- dashboard_bench:begin -->', '<!-- dashboard_bench:end -->'
RQ_TIME = '%Y-%m-%dT%H:%M:%S.%fZ'  # rq's utcformat
FUNC = 'dashboard_bench.explode'  # imported by name, as a worker would (benchmarks/ is on the path)


def explode(n: int) -> None:
    """The job that fails: a traceback a few frames deep, as a user's job would have."""
    _parse(str(n))


def _parse(record: str) -> None:
    raise ValueError(f'cannot parse record {record!r}: missing field "amount"')


# ---------------------------------------------------------------------------------------------
# Filling Redis with what stock rq 3.0 writes (not timed)


@dataclass
class Template:
    """One job that failed in stock rq's worker: what to clone."""

    job_id: str
    hash: dict[Any, Any]  # what redis-py returns: bytes to bytes
    job_pttl: int
    entry_id: bytes
    entry: dict[Any, Any]
    results_pttl: int
    score: float


def failed_template(conn: redis.Redis) -> Template:
    """Runs one failing job through stock rq's ``SimpleWorker`` (in this process) and reads back
    what rq wrote for it."""
    queue = Queue(BIG, connection=conn)
    job = queue.enqueue(FUNC, 0)
    SimpleWorker([queue], connection=conn).work(burst=True, logging_level='CRITICAL')  # it fails on purpose
    entries = cast(list[Any], conn.xrange(Result.get_key(job.id)))
    score = conn.zscore(FailedJobRegistry(BIG, connection=conn).key, job.id)
    if len(entries) != 1 or score is None:
        raise SystemExit(f'the template job did not fail as expected: {conn.hgetall(Job.key_for(job.id))}')
    return Template(
        job.id,
        conn.hgetall(Job.key_for(job.id)),
        int(conn.pttl(Job.key_for(job.id))),
        entries[0][0],
        entries[0][1],
        int(conn.pttl(Result.get_key(job.id))),
        float(score),
    )


class Cloner:
    """Job ``i`` from the template: its own id, arguments (``data`` and ``description`` as rq
    writes them) and times ``age`` seconds earlier; its result entry likewise."""

    TIMES = (b'created_at', b'enqueued_at', b'started_at', b'ended_at', b'last_heartbeat')
    ENTRY_TIMES = (b'execution_started_at', b'execution_ended_at')

    def __init__(self, t: Template) -> None:
        self.t = t
        self.func, self.instance, _, self.kwargs = DefaultSerializer.loads(zlib.decompress(t.hash[b'data']))
        self.times = {k: datetime.strptime(t.hash[k].decode(), RQ_TIME) for k in self.TIMES if t.hash.get(k)}
        self.entry_times = {k: float(t.entry[k]) for k in self.ENTRY_TIMES if t.entry.get(k)}
        self.entry_ms = int(t.entry_id.split(b'-')[0])

    def __call__(self, i: int, age: int) -> tuple[str, dict[Any, Any], bytes, dict[Any, Any]]:
        mapping = dict(self.t.hash)
        mapping[b'data'] = zlib.compress(DefaultSerializer.dumps((self.func, self.instance, (i,), self.kwargs)))
        mapping[b'description'] = f'{self.func}({i})'.encode()
        shift = timedelta(seconds=age)
        for name, when in self.times.items():
            mapping[name] = (when - shift).strftime(RQ_TIME).encode()
        entry = dict(self.t.entry)
        for name, seconds in self.entry_times.items():
            entry[name] = repr(seconds - age).encode()
        return str(uuid.uuid4()), mapping, f'{self.entry_ms - age * 1000}-0'.encode(), entry


def clone_failed(conn: redis.Redis, t: Template, n: int) -> list[str]:
    """``n - 1`` clones of the template in its failed registry (one second apart, the newest
    last), in pipelines of :data:`CHUNK` jobs; returns every failed job id, oldest first."""
    clone, ids = Cloner(t), []
    registry = FailedJobRegistry(BIG, connection=conn).key
    for start in range(1, n, CHUNK):
        with conn.pipeline(transaction=False) as pipe:
            for i in range(start, min(n, start + CHUNK)):
                age = n - i
                job_id, mapping, entry_id, entry = clone(i, age)
                job_key, results_key = Job.key_for(job_id), Result.get_key(job_id)
                pipe.hset(job_key, mapping=mapping)
                if t.job_pttl > 0:
                    pipe.pexpire(job_key, t.job_pttl)
                pipe.xadd(results_key, entry, id=entry_id)
                if t.results_pttl > 0:
                    pipe.pexpire(results_key, t.results_pttl)
                pipe.zadd(registry, {job_id: t.score - age})
                ids.append(job_id)
            pipe.execute()
    return [*ids, t.job_id]


def fill_queues(conn: redis.Redis) -> None:
    """A few queued jobs in every queue but the workers' (stock rq's ``enqueue_many``), and the
    workers' long jobs."""
    for name in QUEUES:
        queue = Queue(name, connection=conn)
        if name == AIORQ_QUEUE:
            datas = [Queue.prepare_data('asyncio.sleep', (SLEEP,), timeout=2 * SLEEP) for _ in range(IN_FLIGHT)]
        elif name == RQ_QUEUE:
            datas = [Queue.prepare_data('time.sleep', (SLEEP,), timeout=2 * SLEEP)]
        else:
            datas = [Queue.prepare_data(FUNC, (i,)) for i in range(QUEUED_PER_QUEUE)]
        queue.enqueue_many(datas)


def start_workers(conn: redis.Redis, url: str) -> list[subprocess.Popen[bytes]]:
    """Two stock ``rq worker`` (one busy with the long job, one idle) and one ``aiorq worker``
    running :data:`IN_FLIGHT` jobs; returns once every long job has started."""
    quiet = ['--url', url, '--logging_level', 'WARNING']
    commands = [
        [sys.executable, '-m', 'rq.cli', 'worker', *quiet, '-w', 'rq.worker.SimpleWorker', RQ_QUEUE],
        [sys.executable, '-m', 'aiorq_worker', 'worker', *quiet, '--concurrency', str(IN_FLIGHT), AIORQ_QUEUE],
    ]
    procs = [subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for c in commands]
    deadline = time.monotonic() + 60
    started = {name: StartedJobRegistry(name, connection=conn).key for name in (RQ_QUEUE, AIORQ_QUEUE)}
    while conn.zcard(started[RQ_QUEUE]) < 1 or conn.zcard(started[AIORQ_QUEUE]) < IN_FLIGHT:
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
            stop_workers(procs)
            raise SystemExit('the workers did not start their long jobs within 60 s')
        time.sleep(0.1)
    # The idle one comes last, so it never takes the busy one's job.
    procs.append(subprocess.Popen(commands[0], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    while conn.scard(REDIS_WORKER_KEYS) < 3:
        if time.monotonic() > deadline or procs[-1].poll() is not None:
            stop_workers(procs)
            raise SystemExit('the idle rq worker did not start within 60 s')
        time.sleep(0.1)
    return procs


def stop_workers(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM, then SIGKILL: the long jobs are in the workers' own processes (``SimpleWorker``,
    aiorq's coroutines), so nothing outlives them."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(3)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


# ---------------------------------------------------------------------------------------------
# Measuring


class Trips:
    """Counts what redis-py sends (one send per command, pipeline or script call) and the
    connections it opens, in the sync client (rq-dashboard) and the asyncio one (aiorq)."""

    sends = 0
    connects = 0

    @classmethod
    def install(cls) -> None:
        import redis.asyncio.connection as async_conn
        import redis.connection as sync_conn

        def counting(original: Callable[..., Any], name: str) -> Callable[..., Any]:
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                setattr(cls, name, getattr(cls, name) + 1)
                return original(*args, **kwargs)

            return wrapper

        for module in (sync_conn, async_conn):
            base = module.AbstractConnection
            base.send_packed_command = counting(base.send_packed_command, 'sends')
            module.Connection._connect = counting(module.Connection._connect, 'connects')


def commandstats(conn: redis.Redis) -> Counter[str]:
    found = conn.info('commandstats')
    return Counter({name.removeprefix('cmdstat_'): int(v['calls']) for name, v in found.items()})


@dataclass
class Sample:
    ms: float
    commands: Counter[str]
    trips: int
    connects: int
    statuses: list[int]
    size: int  # bytes of the responses' bodies


@dataclass
class Row:
    page: str
    system: str
    paths: list[str]
    samples: list[Sample] = field(default_factory=list)
    error: str = ''

    def pct(self, p: float) -> float | None:
        times = sorted(s.ms for s in self.samples)
        if not times:
            return None
        return times[min(len(times) - 1, round(p * (len(times) - 1)))]

    @property
    def quietest(self) -> Sample | None:
        """The sample with the fewest Redis commands (the others include the workers' heartbeats)."""
        return min(self.samples, key=lambda s: sum(s.commands.values()), default=None)


Get = Callable[[str], tuple[int, int]]  # a path's status and body size


def one_sample(conn: redis.Redis, get: Get, paths: list[str]) -> Sample:
    before = commandstats(conn)
    trips, connects = Trips.sends, Trips.connects
    began = time.perf_counter()
    answers = [get(path) for path in paths]
    ms = (time.perf_counter() - began) * 1000
    trips, connects = Trips.sends - trips, Trips.connects - connects
    commands = commandstats(conn) - before
    commands['info'] -= 1  # the INFO that read ``before``
    return Sample(ms, +commands, trips, connects, [a[0] for a in answers], sum(a[1] for a in answers))


def measure(row: Row, conn: redis.Redis, get: Get, repeat: int, budget: float) -> Row:
    """One warm-up, then up to ``repeat`` samples while they take less than ``budget`` seconds
    (at least 3)."""
    try:
        one_sample(conn, get, row.paths)
        spent = 0.0
        while len(row.samples) < repeat and (len(row.samples) < 3 or spent < budget):
            row.samples.append(one_sample(conn, get, row.paths))
            spent += row.samples[-1].ms / 1000
    except Exception as e:  # a dashboard that breaks on this data is a result, not a crash
        row.error = f'{type(e).__name__}: {e}'[:200]
    return row


def aiorq_client(url: str) -> tuple[Get, Callable[[], None]]:
    """aiorq's dashboard app through httpx's ASGI transport, on one asyncio loop."""
    import httpx
    from redis.asyncio import Redis

    import aiorq.web

    loop = asyncio.new_event_loop()
    conn = Redis.from_url(url)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=aiorq.web.dashboard(conn)), base_url='http://dash')

    def get(path: str) -> tuple[int, int]:
        response = loop.run_until_complete(client.get(path))
        return response.status_code, len(response.content)

    def close() -> None:
        loop.run_until_complete(client.aclose())
        loop.run_until_complete(conn.aclose())
        loop.close()

    return get, close


def rq_dashboard_client(url: str) -> Get:
    """rq-dashboard's Flask app as its CLI builds it, through Flask's test client."""
    os.environ.pop('RQ_DASHBOARD_SETTINGS', None)
    from rq_dashboard.cli import make_flask_app
    from rq_dashboard.web import setup_rq_connection

    app = make_flask_app(None, None, None, '')
    app.config['RQ_DASHBOARD_REDIS_URL'] = (url,)
    setup_rq_connection(app)
    client = app.test_client()

    def get(path: str) -> tuple[int, int]:
        response = client.get(path)
        return int(response.status_code), len(response.get_data())

    return get


def pages(ids: list[str]) -> list[tuple[str, list[str], list[str]]]:
    """(page, aiorq's paths, rq-dashboard's paths) for every page both have."""
    deep = max(1, len(ids) // PAGE_SIZE // 2)
    job = ids[len(ids) // 2]
    rqd_jobs = f'{BIG}/failed/{PAGE_SIZE}/asc'
    return [
        # rq-dashboard redirects /0/view/queues to / (the instance number is the route's default).
        ('overview (queues)', ['/'], ['/', '/0/data/queues.json']),
        ('live poll of the overview', ['/api/live'], ['/0/data/queues.json']),
        (
            f'failed registry, page 1 ({PAGE_SIZE} jobs)',
            [f'/queues/{BIG}?registry=failed'],
            [f'/0/view/jobs/{rqd_jobs}/1', f'/0/data/jobs/{rqd_jobs}/1.json'],
        ),
        (
            f'failed registry, page {deep:,}',
            [f'/queues/{BIG}?registry=failed&page={deep}'],
            [f'/0/view/jobs/{rqd_jobs}/{deep}', f'/0/data/jobs/{rqd_jobs}/{deep}.json'],
        ),
        ('job page (a failed job)', [f'/jobs/{job}'], [f'/0/view/job/{job}', f'/0/data/job/{job}.json']),
        ('workers', ['/workers'], ['/0/view/workers', '/0/data/workers.json']),
    ]


def run_pages(conn: redis.Redis, url: str, ids: list[str], repeat: int, budget: float) -> list[Row]:
    aiorq_get, close = aiorq_client(url)
    try:
        rqd_get: Get | None = rq_dashboard_client(url)
        rqd_error = ''
    except Exception as e:  # not installed, or it cannot start on this Python / rq
        rqd_get, rqd_error = None, f'{type(e).__name__}: {e}'
    rows = []
    try:
        for page, aiorq_paths, rqd_paths in pages(ids):
            for system, get, paths in (('aiorq', aiorq_get, aiorq_paths), ('rq-dashboard', rqd_get, rqd_paths)):
                row = Row(page, system, paths)
                if get is None:
                    row.error = rqd_error
                else:
                    measure(row, conn, get, repeat, budget)
                progress(row)
                rows.append(row)
    finally:
        close()
    return rows


# ---------------------------------------------------------------------------------------------
# Reporting


def version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return 'not installed'


def machine_line(conn: redis.Redis, loads: tuple[float, float]) -> str:
    dists = ('aiorq', 'rq', 'rq-dashboard', 'Flask', 'starlette', 'httpx', 'redis', 'hiredis')
    return (
        f'{datetime.now(timezone.utc):%Y-%m-%d}, {os.cpu_count()} cores, {platform.platform(terse=True)}, '
        f'Python {platform.python_version()}, redis-server {conn.info("server")["redis_version"]}, '
        + ', '.join(f'{d} {version(d)}' for d in dists)
        + f'; load average {loads[0]:.1f} at the start, {loads[1]:.1f} at the end'
    )


def fmt_ms(v: float | None) -> str:
    if v is None:
        return '-'
    return f'{v:,.0f}' if v >= 100 else f'{v:.1f}'


def top_commands(commands: Counter[str], n: int = 4) -> str:
    return ', '.join(f'{name.upper()} {count:,}' for name, count in commands.most_common(n))


def cells(row: Row) -> list[str]:
    s = row.quietest
    if row.error or s is None:
        return [f'**{row.error or "no sample"}**', '', '', '', '', '', '']
    bad = sorted({c for x in row.samples for c in x.statuses if c != 200})
    status = f' (HTTP {", ".join(map(str, bad))})' if bad else ''
    return [
        f'{fmt_ms(row.pct(0.5))}{status}',
        fmt_ms(row.pct(0.9)),
        f'{sum(s.commands.values()):,}',
        f'{s.trips:,}',
        str(s.connects),
        f'{s.size / 1024:,.0f}',
        str(len(row.samples)),
    ]


def table(rows: list[Row]) -> list[str]:
    lines = [
        '| page | system | p50 ms | p90 ms | Redis commands | round trips | new connections | KB sent | n '
        '| commands (most) |',
        '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |',
    ]
    for row in rows:
        s = row.quietest
        most = top_commands(s.commands) if s and not row.error else ''
        lines.append(f'| {row.page} | {row.system} | {" | ".join(cells(row))} | {most} |')
    return lines


def progress(row: Row) -> None:
    print(f'  {row.page:<32} {row.system:<13} ' + '  '.join(c for c in cells(row)[:6] if c), flush=True)


def write_results(block: list[str], path: Path = RESULTS) -> None:
    """Replaces what is between the section's markers (adds the section at the end if missing)."""
    text = path.read_text()
    generated = '\n'.join([BEGIN, *block, END])
    if BEGIN in text and END in text:
        head, _, rest = text.partition(BEGIN)
        text = head + generated + rest.partition(END)[2]
    else:
        text = text.rstrip('\n') + f'\n\n{HEADING}\n\n{generated}\n'
    path.write_text(text)


# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--quick', action='store_true', help='smoke test: 2,000 failed jobs, 5 requests a page')
    p.add_argument('--failed', type=int, help='failed jobs in one registry (default 200,000)')
    p.add_argument('--repeat', type=int, help='requests per page after the warm-up (default 20)')
    p.add_argument('--budget', type=float, default=60.0, help='seconds of samples per page before it stops at 3')
    p.add_argument('--write-results', action='store_true', help='write the table into benchmarks/RESULTS.md')
    args = p.parse_args(argv)
    args.failed = args.failed or (2_000 if args.quick else 200_000)
    args.repeat = args.repeat or (5 if args.quick else 20)
    if args.failed < 1 or args.repeat < 1:
        p.error('--failed and --repeat must be at least 1')
    return args


def fill(conn: redis.Redis, url: str, n: int) -> tuple[list[str], list[subprocess.Popen[bytes]]]:
    began = time.perf_counter()
    ids = clone_failed(conn, failed_template(conn), n)
    fill_queues(conn)
    filled = time.perf_counter()
    procs = start_workers(conn, url)
    print(
        f'filled {n:,} failed jobs and {len(QUEUES)} queues in {filled - began:.1f} s '
        f'({conn.info("memory")["used_memory_human"]}), workers up in {time.perf_counter() - filled:.1f} s',
        flush=True,
    )
    return ids, procs


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    Trips.install()
    server = RedisServer()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        conn = redis.Redis.from_url(server.url)
        load_start = os.getloadavg()[0]
        ids, procs = fill(conn, server.url, args.failed)
        rows = run_pages(conn, server.url, ids, args.repeat, args.budget)
        machine = machine_line(conn, (load_start, os.getloadavg()[0]))
    finally:
        stop_workers(procs)
        server.stop()
    block = [
        f"{args.failed:,} jobs in `{BIG}`'s failed registry, {len(QUEUES)} queues, 3 workers "
        f'({IN_FLIGHT + 1} executions in flight); {PAGE_SIZE} jobs a page. {machine}.',
        '',
        *table(rows),
    ]
    print('\n' + '\n'.join(block))
    if args.write_results:
        write_results(block)
        print(f'\nwritten into {RESULTS}')
    return 1 if any(r.error and r.system == 'aiorq' for r in rows) else 0


if __name__ == '__main__':
    sys.exit(main())
