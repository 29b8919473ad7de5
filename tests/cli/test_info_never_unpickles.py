"""``aiorq info`` is an operator's tool: it runs on the operator's machine, against data anybody
with write access to rq's keys may have crafted. It never deserializes a job's ``data`` (nor its
``meta``): what it shows of a job comes from rq's ``description`` text. Here a running job's
``data`` and ``meta`` are replaced by pickles that would create a file when loaded, and an
abandoned job (which ``aiorq info``, like ``rq info``, moves to the failed registry) carries one in
its ``meta``; every mode of ``aiorq info`` runs and the file is never created."""

from __future__ import annotations

import asyncio
import builtins
import pickle
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis
import rq
import tasks
from redis.asyncio import Redis
from rq.job import JobStatus
from waiting import wait_for

from aiorq import Queue
from aiorq_worker import Worker


class Booby:
    """Unpickling this runs ``open(path, 'w')``: the marker file proves a load happened."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return builtins.exec, (f'open({self.path!r}, "w").close()',)


def info(url: str, *args: str) -> list[str]:
    cmd = [sys.executable, '-m', 'aiorq_worker', 'info', '-u', url, *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert 'Traceback' not in done.stderr, done.stderr
    return done.stdout.splitlines()


def abandon(sync_conn: redis.Redis, job_id: str) -> None:
    """The state a worker killed mid-job leaves: STARTED, its execution past its deadline."""
    sync_conn.hset(f'rq:job:{job_id}', 'status', JobStatus.STARTED.value)
    sync_conn.zrem('rq:failed:stale', job_id)
    sync_conn.zadd('rq:wip:stale', {f'{job_id}:deadbeef': int(time.time()) - 10})


async def test_info_never_loads_job_data(conn: Redis, sync_conn: redis.Redis, redis_url: str, tmp_path: Path) -> None:
    marker = tmp_path / 'unpickled'
    booby = pickle.dumps(Booby(marker))
    q = Queue('q', connection=conn)
    running = await q.enqueue(tasks.async_sleep_for, 30)
    # A description of the enqueuer's own, with a terminal escape in it: shown, never obeyed.
    named = await q.enqueue(tasks.async_sleep_for, 30, description='nightly \x1b[2J report')
    worker = Worker('q', connection=conn, name='aio')
    task = asyncio.ensure_future(worker.work())
    try:
        await wait_for(lambda: sync_conn.zcard('rq:wip:q') == 2)
        sync_conn.hset(f'rq:job:{running.id}', mapping={'data': booby, 'meta': booby})
        stale = rq.Queue('stale', connection=sync_conn).enqueue('tasks.add', 1, 2)
        sync_conn.hset(f'rq:job:{stale.id}', 'meta', booby)
        sync_conn.lrem('rq:queue:stale', 0, stale.id)

        for args in ([], ['-W'], ['-r'], ['-R'], ['-r', '-W']):
            abandon(sync_conn, stale.id)
            lines = info(redis_url, *args)
            assert not marker.exists(), f'aiorq info {" ".join(args)} unpickled job data'
            # The abandoned job was handled as rq info handles it, without loading it.
            assert sync_conn.zscore('rq:failed:stale', stale.id) is not None, args
            assert sync_conn.hget(f'rq:job:{stale.id}', 'meta') == booby
            if '-R' in args:
                assert 'q:     aio (busy)' in lines, lines  # padded to the longest name, as rq
            elif '-r' in args:
                executions = {line.split()[2]: line.split() for line in lines if line.startswith('execution ')}
                assert executions[running.id][:2] == ['execution', 'aio'], lines
                assert executions[running.id][4] == 'tasks.async_sleep_for', lines
                assert executions[named.id][4] == 'nightly_?[2J_report', lines
            else:
                assert any(line.startswith(f'    {running.id}: tasks.async_sleep_for, running for ') for line in lines)
                assert any(line.startswith(f'    {named.id}: nightly ?[2J report, running for ') for line in lines)
            assert not any('\x1b' in line for line in lines)
        assert sync_conn.hget(f'rq:job:{running.id}', 'data') == booby
    finally:
        worker.request_stop()
        worker.request_stop()  # the second request cancels the sleeper
        await asyncio.wait_for(task, 20)
    assert not marker.exists()
