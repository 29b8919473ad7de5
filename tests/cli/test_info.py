"""``aiorq info`` against ``rq info`` on the same Redis: queues, jobs, a stock ``rq worker`` and
an aiorq worker running coroutine jobs concurrently. Every line ``rq info`` prints, ``aiorq info``
prints too (same counts, same shape); it adds, under each worker, its executions in flight and,
for aiorq workers, the concurrency recorded in the worker hash."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import time

import redis
import rq
import tasks
from processes import Processes
from redis.asyncio import Redis
from waiting import wait_for

from aiorq import Queue
from aiorq_worker import Worker

SLEEPERS = 6
CONCURRENCY = 4


def run(cmd: list[str]) -> list[str]:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


async def both(url: str, *args: str) -> tuple[list[str], list[str]]:
    """The output lines of ``rq info`` and of ``aiorq info`` with ``args``."""
    stock = await asyncio.to_thread(run, [sys.executable, '-m', 'rq.cli', 'info', '-u', url, *args])
    ours = await asyncio.to_thread(run, [sys.executable, '-m', 'aiorq_worker', 'info', '-u', url, *args])
    return stock, ours


def shared(lines: list[str], extra: tuple[str, ...] = ('    ',)) -> list[str]:
    """The lines both commands print: without aiorq's additions and the clock line."""
    return sorted(line for line in lines if not line.startswith(extra) and not line.startswith('Updated: '))


async def test_counts_and_lines_match_rq_info(
    conn: Redis, sync_conn: redis.Redis, redis_url: str, processes: Processes
) -> None:
    rq.Queue('stock', connection=sync_conn).enqueue('tasks.add', 1, 2)
    stock_cmd = [sys.executable, '-m', 'rq.cli', 'worker', '-u', redis_url, '-n', 'stockw', 'stock']
    processes.start('rq-worker', stock_cmd)
    idle = Queue('idle', connection=conn)
    for _ in range(2):
        await idle.enqueue(tasks.add, 1, 1)
    q = Queue('q', connection=conn)
    for job in (tasks.add, tasks.add, tasks.fail):
        await q.enqueue(job, *([1, 2] if job is tasks.add else []))
    worker = Worker('q', connection=conn, concurrency=CONCURRENCY, name='aio')
    task = asyncio.ensure_future(worker.work())
    try:
        await wait_for(lambda: sync_conn.zcard('rq:finished:q') == 2 and sync_conn.zcard('rq:failed:q') == 1)
        sleepers = {(await q.enqueue(tasks.async_sleep_for, 30)).id for _ in range(SLEEPERS)}
        await wait_for(lambda: sync_conn.zcard('rq:wip:q') == CONCURRENCY and sync_conn.llen('rq:queue:q') == 2)
        await wait_for(lambda: sync_conn.hget('rq:worker:stockw', 'successful_job_count') == b'1', 30)
        await wait_for(lambda: sync_conn.hget('rq:worker:stockw', 'state') == b'idle')
        running = {m.decode().split(':')[0] for m in sync_conn.zrange('rq:wip:q', 0, -1)}
        assert running <= sleepers

        # The concurrency field is aiorq's own; rq still reads the record.
        assert sync_conn.hget('rq:worker:aio', 'concurrency') == str(CONCURRENCY).encode()
        found = rq.Worker.find_by_key('rq:worker:aio', connection=sync_conn)
        assert found is not None and found.name == 'aio' and found.get_state() == 'busy'

        stock, ours = await both(redis_url)
        assert shared(stock) == shared(ours)
        assert 'q            |██ 2, 4 executing, 2 finished, 1 failed' in stock
        assert '3 queues, 4 jobs total' in stock and '2 workers, 3 queues' in stock
        aio = next(i for i, line in enumerate(ours) if line.startswith('aio ('))
        assert ours[aio + 1] == f'    concurrency {CONCURRENCY}, {CONCURRENCY} in flight'
        shown = [
            re.fullmatch(r'    (\S+): tasks\.async_sleep_for, running for \d+\.\ds', line) for line in ours[aio + 2 :]
        ]
        assert {m.group(1) for m in shown[:CONCURRENCY] if m} == running
        stockw = next(i for i, line in enumerate(ours) if line.startswith('stockw ('))
        assert not ours[stockw + 1].startswith('    ')  # idle, and stock rq records no concurrency

        stock, ours = await both(redis_url, '--raw')
        assert shared(stock) == shared(ours, ('execution ', 'concurrency '))
        assert f'concurrency aio {CONCURRENCY}' in ours
        executions = [line.split() for line in ours if line.startswith('execution ')]
        assert {e[2] for e in executions} == running
        assert {(e[1], e[4]) for e in executions} == {('aio', 'tasks.async_sleep_for')}

        for args in (['--by-queue'], ['--only-queues'], ['--only-workers'], ['q', 'idle'], ['-R', 'stock']):
            stock, ours = await both(redis_url, *args)
            assert shared(stock) == shared(ours), args
    finally:
        worker.request_stop()
        worker.request_stop()  # the second request cancels the sleepers
        await asyncio.wait_for(task, 20)


def test_interval_refreshes_until_interrupted(sync_conn: redis.Redis, redis_url: str) -> None:
    rq.Queue('q', connection=sync_conn).enqueue('tasks.add', 1, 2)
    cmd = [sys.executable, '-m', 'aiorq_worker', 'info', '-u', redis_url, '--interval', '0.2']
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(3)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert 'Traceback' not in err
    assert out.count('q            |') >= 2 and out.count('Updated: ') >= 2
