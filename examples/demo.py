"""The aiorq demo: enqueue the manual's examples with aiorq, let a worker run them, read them back.

What it does, on queue 'my_queue':

1. enqueues ``mylib.add(1, 2)``, ``mylib.summator.delay(1, 2)`` (the ``@job`` decorator), the
   dependency chain ``add`` → ``add`` → ``job_summator`` and the coroutine job ``async_add(2, 3)``;
2. runs a worker in burst mode (it quits when the queue is empty) and waits for it;
3. reads every result back through aiorq and prints a short report.

It exits 0 only if every result is right.

The worker is aiorq's own (``aiorq worker --burst my_queue``); ``--stock-worker`` runs stock
``rq worker --burst`` (rq 3.0) instead, which shows that jobs enqueued by aiorq are plain rq jobs.
Everything about the worker is in :func:`run_worker`.

Redis: ``--url``, else ``$RQ_REDIS_URL`` or ``$REDIS_URL``; with none of them the demo starts its
own ``redis-server`` on a free loopback port (no persistence, in a temporary directory) and stops
it at the end. It never uses the Redis on port 6379 unless told to.

    python examples/demo.py                      # private redis-server
    python examples/demo.py --url redis://127.0.0.1:6379/0
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError

EXAMPLES = Path(__file__).resolve().parent
if str(EXAMPLES) not in sys.path:  # already there when run as a script
    sys.path.insert(0, str(EXAMPLES))

import mylib  # noqa: E402

import aiorq  # noqa: E402
from aiorq import Job, Queue  # noqa: E402

QUEUE = 'my_queue'


# -- the worker ------------------------------------------------------------------------------


def rq_command() -> list[str]:
    """How to start stock rq's CLI: ``python -m rq.cli``, or the ``rq`` script next to Python."""
    if importlib.util.find_spec('rq.cli.__main__') is not None:
        return [sys.executable, '-m', 'rq.cli']
    script = Path(sys.executable).with_name('rq')
    if script.exists():
        return [str(script)]
    found = shutil.which('rq')
    if found is None:
        raise RuntimeError('cannot find rq\'s command line (neither "python -m rq.cli" nor an "rq" script)')
    return [found]


def run_worker(
    url: str, burst: bool = True, verbose: bool = False, timeout: float | None = None, stock: bool = False
) -> int:
    """Run a worker on 'my_queue' until it exits (in burst mode: once the queue is empty) and
    return its exit code; the worker imports ``mylib`` from the examples directory. It is stopped
    after ``timeout`` seconds (default: 120 in burst mode, no limit otherwise).

    This is the one place that knows which worker runs the jobs: ``aiorq worker``, or stock
    ``rq worker`` with ``stock=True``.
    """
    if timeout is None and burst:
        timeout = 120
    cli = rq_command() if stock else [sys.executable, '-m', 'aiorq_worker']
    command = [*cli, 'worker', '--url', url, '--path', str(EXAMPLES)]
    if burst:
        command.append('--burst')
    if not verbose:
        command += ['--logging_level', 'WARNING']  # failures are still logged
    command.append(QUEUE)
    proc = subprocess.Popen(command)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        print(f'the worker did not finish within {timeout:g} s', file=sys.stderr)
        return -1
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# -- Redis -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return int(s.getsockname()[1])


@contextmanager
def private_redis() -> Iterator[str]:
    """A throwaway ``redis-server`` on a free loopback port; yields its URL."""
    binary = shutil.which('redis-server')
    if binary is None:
        raise SystemExit('redis-server is not installed: install it, or pass --url redis://HOST:PORT/DB')
    directory = tempfile.mkdtemp(prefix='aiorq-demo-')
    proc = None
    try:
        for _attempt in range(3):  # another process may take the free port before redis binds it
            port = free_port()
            command = [binary, '--port', str(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no']
            proc = subprocess.Popen(
                [*command, '--dir', directory], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            if _wait_for_port(proc, port, deadline=time.monotonic() + 10):
                break
            _stop(proc)
            proc = None
        if proc is None:
            raise SystemExit('could not start redis-server')
        yield f'redis://127.0.0.1:{port}/0'
    finally:
        if proc is not None:
            _stop(proc)
        shutil.rmtree(directory, ignore_errors=True)


def _wait_for_port(proc: subprocess.Popen[bytes], port: int, deadline: float) -> bool:
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with socket.create_connection(('127.0.0.1', port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# -- enqueueing and checking -----------------------------------------------------------------


@dataclass
class Check:
    label: str
    job: Job
    expected: Any
    saves_own_id: bool = False  # the job stores aiorq.get_current_job().id in meta['seen_id']


async def enqueue_examples(redis: Any) -> list[Check]:
    """The manual's examples, enqueued with aiorq."""
    queue = Queue(QUEUE, connection=redis)
    checks = [Check('queue.enqueue(add, 1, 2)', await queue.enqueue(mylib.add, 1, 2), 3)]

    # The @job decorator: summator's delay() uses the current connection.
    aiorq.push_connection(redis)
    try:
        checks.append(Check('summator.delay(1, 2)', await mylib.summator.delay(1, 2), 3))
    finally:
        aiorq.pop_connection()

    # Job dependencies: job2 waits for job1, job3 for job2.
    job1 = await queue.enqueue(mylib.add, 1, 2)
    job2 = await queue.enqueue(mylib.add, 1, 2, depends_on=job1)
    job3 = await queue.enqueue(mylib.job_summator, job1.id, job2.id, depends_on=job2)
    checks += [
        Check('job1 = add(1, 2)', job1, 3),
        Check('job2 = add(1, 2), after job1', job2, 3),
        Check('job_summator(job1, job2), after job2', job3, 6),
    ]

    # A coroutine job (stock rq 3.0 runs it with asyncio.run).
    checks.append(Check('async_add(2, 3), a coroutine', await queue.enqueue(mylib.async_add, 2, 3), 5, True))
    return checks


async def check(item: Check) -> tuple[bool, str]:
    """Read one job back; return (ok, report line)."""
    job = item.job
    latest = await job.latest_result()  # the burst worker has exited: every result is written by now
    status = await job.get_status()
    state = status.value if status is not None else 'missing'
    if latest is None:
        return False, f'no result ({state})'
    value = await job.result
    ok = value == item.expected
    line = f'{value!r} ({state})' if ok else f'{value!r}, expected {item.expected!r} ({state}: {latest.exc_string})'
    if ok and item.saves_own_id:
        seen = (await job.get_meta()).get('seen_id')
        if seen != job.id:
            return False, f'{value!r}, but get_current_job() saw id {seen!r} instead of {job.id!r}'
        line += ', get_current_job() saw its own id'
    return ok, line


async def demo(url: str, verbose: bool, stock: bool = False) -> int:
    redis = aiorq.from_url(url)
    try:
        try:
            checks = await enqueue_examples(redis)
        except RedisConnectionError as e:
            print(f'cannot reach Redis at {url}: {e}', file=sys.stderr)
            return 1
        queue = Queue(QUEUE, connection=redis)
        print(f'enqueued {len(checks)} jobs with aiorq {aiorq.VERSION}; {await queue.count} waiting on {QUEUE!r}')

        which = 'stock rq worker --burst' if stock else 'aiorq worker --burst'
        print(f'running the worker ({which}) ...', flush=True)
        code = await asyncio.to_thread(run_worker, url, True, verbose, None, stock)
        print(f'worker exited with code {code}')

        failures = 0
        width = max(len(c.label) for c in checks)
        for item in checks:
            ok, line = await check(item)
            failures += not ok
            print(f'  {"ok  " if ok else "FAIL"}  {item.label:<{width}}  -> {line}')
        print(f'{QUEUE!r}: {await queue.count} waiting, {await queue.finished_job_registry.count} finished')
        if code != 0 or failures:
            print(f'demo FAILED: {failures} wrong result(s), worker exit code {code}', file=sys.stderr)
            return 1
        print(f'all {len(checks)} results are right')
        return 0
    finally:
        await redis.aclose()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Enqueue the examples with aiorq, run a worker, check the results.')
    parser.add_argument(
        '--url',
        default=os.environ.get('RQ_REDIS_URL') or os.environ.get('REDIS_URL'),
        help='Redis to use (default: $RQ_REDIS_URL, then $REDIS_URL, else a private redis-server)',
    )
    parser.add_argument('-v', '--verbose', action='store_true', help="show the worker's full log")
    parser.add_argument('--stock-worker', action='store_true', help='run stock `rq worker` instead of aiorq worker')
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    if args.url:
        print(f'using Redis at {args.url}')
        return asyncio.run(demo(args.url, args.verbose, args.stock_worker))
    with private_redis() as url:
        print(f'started a private redis-server at {url}')
        return asyncio.run(demo(url, args.verbose, args.stock_worker))


if __name__ == '__main__':
    sys.exit(main())
