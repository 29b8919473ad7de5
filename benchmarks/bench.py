"""Throughput of stock rq's ``SimpleWorker`` and of ``aiorq worker`` on no-op jobs.

    python benchmarks/bench.py [--jobs N] [--quick] [--concurrency C]

Starts a private ``redis-server`` on a free loopback port (never 6379), then for each kind of job
(a plain no-op function, an ``async def`` no-op) and each worker: flushes the database, enqueues
N jobs with stock rq's ``enqueue_many`` (not timed), runs the worker in burst mode in a subprocess
(``rq worker --burst -w rq.worker.SimpleWorker`` / ``aiorq worker --burst --concurrency C``, both
at logging level WARNING), checks that every job finished with the right result, and times the
run from the earliest ``started_at`` to the latest ``ended_at`` found in the job hashes (so the
interpreter start-up and the worker's own start and stop are not counted; the ``wall s`` column
shows the whole process for reference).

Run it directly (``python benchmarks/bench.py --jobs 5000``); ``make bench`` runs ``benchmarks/suite.py``, which
includes these cases beside arq and saq.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from rq import Queue
from rq.job import Job, JobStatus

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import jobs  # noqa: E402

QUEUE = 'bench'
KINDS = {'plain': jobs.noop, 'async': jobs.async_noop}


@dataclass
class Run:
    kind: str
    worker: str
    jobs: int
    seconds: float
    wall: float

    @property
    def rate(self) -> float:
        return self.jobs / self.seconds if self.seconds > 0 else float('inf')


class RedisServer:
    """A throw-away ``redis-server`` on a free port, without persistence."""

    def __init__(self) -> None:
        binary = shutil.which('redis-server')
        if binary is None:
            raise SystemExit('redis-server is not installed (apt-get install redis-server)')
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix='aiorq-bench-')
        self.proc = subprocess.Popen(
            [binary, '--port', str(self.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
            cwd=self.dir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(('127.0.0.1', self.port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise SystemExit('redis-server did not start')
                time.sleep(0.05)
        self.url = f'redis://127.0.0.1:{self.port}/0'

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)


def free_port() -> int:
    while True:
        with socket.socket() as s:
            s.bind(('127.0.0.1', 0))
            port = int(s.getsockname()[1])
        if port != 6379:
            return port


def worker_command(worker: str, url: str, concurrency: int) -> list[str]:
    common = ['--burst', '--url', url, '--path', str(HERE), '--logging_level', 'WARNING']
    if worker == 'rq':
        return [sys.executable, '-m', 'rq.cli', 'worker', *common, '-w', 'rq.worker.SimpleWorker', QUEUE]
    return [sys.executable, '-m', 'aiorq_worker', 'worker', *common, '--concurrency', str(concurrency), QUEUE]


def enqueue(conn: redis.Redis, func: Any, n: int) -> list[str]:
    queue = Queue(QUEUE, connection=conn)
    ids: list[str] = []
    batch = 500
    for start in range(0, n, batch):
        datas = [Queue.prepare_data(func, args=(i,)) for i in range(start, min(n, start + batch))]
        ids += [job.id for job in queue.enqueue_many(datas)]
    return ids


def verify_and_time(conn: redis.Redis, ids: list[str]) -> float:
    """Check every job finished with its own index as result; return last ended_at - first started_at."""
    fetched = Job.fetch_many(ids, connection=conn)
    starts, ends = [], []
    for i, (job_id, job) in enumerate(zip(ids, fetched)):
        if job is None:
            raise SystemExit(f'job {job_id} vanished')
        status = job.get_status(refresh=False)
        if status != JobStatus.FINISHED:
            raise SystemExit(f'job {job_id} is {status}, not finished')
        value = job.return_value()
        if value != i:
            raise SystemExit(f'job {job_id} returned {value!r}, expected {i}')
        if job.started_at is None or job.ended_at is None:
            raise SystemExit(f'job {job_id} lacks started_at/ended_at')
        starts.append(job.started_at)
        ends.append(job.ended_at)
    if conn.llen(f'rq:queue:{QUEUE}') or conn.zcard(f'rq:wip:{QUEUE}'):
        raise SystemExit('jobs left in the queue or the started registry')
    return (max(ends) - min(starts)).total_seconds()


def one_run(conn: redis.Redis, url: str, kind: str, worker: str, n: int, concurrency: int) -> Run:
    conn.flushdb()
    ids = enqueue(conn, KINDS[kind], n)
    began = time.monotonic()
    done = subprocess.run(worker_command(worker, url, concurrency), capture_output=True, text=True, timeout=600)
    wall = time.monotonic() - began
    if done.returncode != 0:
        raise SystemExit(f'{worker} worker exited with {done.returncode}:\n{done.stdout}\n{done.stderr}')
    seconds = verify_and_time(conn, ids)
    conn.flushdb()
    return Run(kind, worker, n, seconds, wall)


WORKER_LABELS = {'rq': 'rq SimpleWorker', 'aiorq': 'aiorq worker'}


def table(runs: list[Run], concurrency: int) -> str:
    header = f'{"kind":<6}  {"worker":<20}  {"jobs":>6}  {"seconds":>8}  {"jobs/s":>9}  {"wall s":>7}'
    lines = [header, '-' * len(header)]
    for r in runs:
        label = WORKER_LABELS[r.worker] + (f' (c={concurrency})' if r.worker == 'aiorq' else '')
        lines.append(f'{r.kind:<6}  {label:<20}  {r.jobs:>6}  {r.seconds:>8.3f}  {r.rate:>9.1f}  {r.wall:>7.2f}')
    lines.append('')
    for kind in KINDS:
        by = {r.worker: r for r in runs if r.kind == kind}
        if 'rq' in by and 'aiorq' in by:
            lines.append(f'{kind}: aiorq/rq throughput ratio {by["aiorq"].rate / by["rq"].rate:.2f}x')
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--jobs', type=int, default=2000, help='jobs per run (default 2000)')
    parser.add_argument('--quick', action='store_true', help='200 jobs per run (a smoke test)')
    parser.add_argument('--concurrency', type=int, default=64, help='aiorq worker --concurrency (default 64)')
    args = parser.parse_args(argv)
    n = 200 if args.quick else args.jobs
    if n < 1:
        parser.error('--jobs must be at least 1')

    server = RedisServer()
    try:
        conn = redis.Redis.from_url(server.url)
        runs = []
        for kind in KINDS:
            for worker in ('rq', 'aiorq'):
                runs.append(one_run(conn, server.url, kind, worker, n, args.concurrency))
                print(f'... {kind} on {WORKER_LABELS[worker]}: {runs[-1].seconds:.3f} s', file=sys.stderr)
        conn.close()
    finally:
        server.stop()
    print(table(runs, args.concurrency))
    return 0


if __name__ == '__main__':
    sys.exit(main())
