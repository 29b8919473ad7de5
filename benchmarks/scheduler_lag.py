"""Scheduler lag: how long after its due second a scheduled job lands on its queue.

    python benchmarks/scheduler_lag.py [--seconds S] [--per-second J] [--rounds R] [--quick]

Starts a private ``redis-server`` (never 6379). For each round and each scheduler, interleaved
(stock ``rq worker --with-scheduler -w rq.worker.SimpleWorker``, then ``aiorq worker -s``): starts
the worker, waits until it holds the scheduler lock, schedules J jobs for each of the next S whole
seconds with stock rq's ``enqueue_at`` (so aiorq gets no wake-up hint from the client: the lag
comes from its own clock), waits until every job ran, and takes ``enqueued_at - due second`` of
each job. rq stores due times as whole seconds; rq's scheduler polls once a second, aiorq's sleeps
until the earliest due second it knows of. Reports p50 / p99 / max lag in milliseconds.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import redis
from rq import Queue
from rq.job import Job, JobStatus

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import jobs  # noqa: E402
from bench import RedisServer  # noqa: E402

QUEUE = 'lag'
SCHEDULERS = {
    'rq': ['-m', 'rq.cli', 'worker', '--with-scheduler', '-w', 'rq.worker.SimpleWorker'],
    'aiorq': ['-m', 'aiorq_worker', 'worker', '--with-scheduler'],
}


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def one_round(conn: redis.Redis, url: str, system: str, seconds: int, per_second: int) -> list[float]:
    conn.flushdb()
    cmd = [sys.executable, *SCHEDULERS[system], '--url', url, '--path', str(HERE), '--logging_level', 'WARNING', QUEUE]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while conn.get(f'rq:scheduler-lock:{QUEUE}') is None:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit(f'{system}: the scheduler never took its lock')
            time.sleep(0.02)
        q = Queue(QUEUE, connection=conn)
        first = int(time.time()) + 2
        due: dict[str, int] = {}
        for s in range(seconds):
            when = datetime.fromtimestamp(first + s, timezone.utc)
            for _ in range(per_second):
                due[q.enqueue_at(when, jobs.noop, 0).id] = first + s
        deadline = time.monotonic() + seconds + 30
        while True:
            found = Job.fetch_many(list(due), connection=conn)
            if all(j is not None and j.get_status(refresh=False) == JobStatus.FINISHED for j in found):
                break
            if time.monotonic() > deadline:
                raise SystemExit(f'{system}: not every scheduled job ran')
            time.sleep(0.1)
        lags = []
        for job in found:
            assert job is not None and job.enqueued_at is not None
            lags.append(job.enqueued_at.replace(tzinfo=timezone.utc).timestamp() - due[job.id])
        return lags
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--seconds', type=int, default=10, help='distinct due seconds per round')
    parser.add_argument('--per-second', type=int, default=5, help='jobs due in each of those seconds')
    parser.add_argument('--rounds', type=int, default=2, help='interleaved rounds per scheduler')
    parser.add_argument('--quick', action='store_true', help='3 seconds, 2 jobs each, one round (for the tests)')
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.per_second, args.rounds = 3, 2, 1
    server = RedisServer()
    try:
        url = f'redis://127.0.0.1:{server.port}/0'
        conn = redis.Redis.from_url(url)
        lags: dict[str, list[float]] = {name: [] for name in SCHEDULERS}
        for _ in range(args.rounds):
            for system in SCHEDULERS:
                lags[system] += one_round(conn, url, system, args.seconds, args.per_second)
        print(f'{"scheduler":<10} {"jobs":>6} {"p50 ms":>8} {"p99 ms":>8} {"max ms":>8}')
        for system, values in lags.items():
            ms = [v * 1000 for v in values]
            print(
                f'{system:<10} {len(ms):>6} {statistics.median(ms):>8.1f} {percentile(ms, 99):>8.1f} {max(ms):>8.1f}'
            )
        ratio = statistics.median(lags['rq']) / max(statistics.median(lags['aiorq']), 1e-6)
        print(f'p50 lag rq/aiorq: {ratio:.0f}x')
    finally:
        server.stop()
    return 0


if __name__ == '__main__':
    sys.exit(main())
