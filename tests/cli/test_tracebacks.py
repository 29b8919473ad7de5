"""A failed job's recorded traceback starts at the job's own frame, in every way aiorq runs a
job (coroutine, plain function in a thread, plain function in a child process), in the job
hash and in the result stream.

Stock rq's tracebacks begin with three frames of its own (``perform_job``, ``perform``,
``_execute``; plus ``asyncio.run``'s for a coroutine), which aiorq does not run. aiorq records
what follows them: from the job's first frame on, the text is identical to stock rq's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis
import rq
from redis.asyncio import Redis

from aiorq_worker import Worker

HEADER = 'Traceback (most recent call last):\n'
HERE = Path(__file__).resolve().parent


def from_job_frame(text: str) -> str:
    """Stock rq's traceback from the first frame in cli_jobs.py on, under the usual header."""
    lines = text.splitlines(keepends=True)
    first = next(i for i, line in enumerate(lines) if line.startswith('  File ') and 'cli_jobs.py' in line)
    return HEADER + ''.join(lines[first:])


def recorded(conn: redis.Redis, job_id: str) -> tuple[str, str]:
    """The traceback as rq reads it back (``job.exc_info``) and in the result stream; rq 3.0
    keeps no ``exc_info`` field in the job hash (the stream holds it)."""
    job = rq.job.Job.fetch(job_id, connection=conn)
    assert not conn.hexists(job.key, 'exc_info')
    result = job.latest_result()
    assert result is not None and result.exc_string is not None and job.exc_info is not None
    return job.exc_info, result.exc_string


def stock_traceback(conn: redis.Redis, url: str, func: str) -> str:
    """What ``rq worker -w rq.worker.SimpleWorker`` records for the same failing function."""
    job = rq.Queue('stock', connection=conn).enqueue(func, 'boom')
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join([str(HERE), os.environ.get('PYTHONPATH', '')])}
    cmd = [sys.executable, '-m', 'rq.cli', 'worker', '--burst', '-w', 'rq.worker.SimpleWorker', '-u', url, 'stock']
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    in_hash, in_result = recorded(conn, job.id)
    assert in_hash == in_result
    return in_hash


@pytest.mark.parametrize(
    'func, sync_jobs',
    [('cli_jobs.async_fail', 'thread'), ('cli_jobs.fail', 'thread'), ('cli_jobs.fail', 'process')],
)
async def test_traceback_starts_at_the_job(
    func: str, sync_jobs: str, conn: Redis, sync_conn: redis.Redis, redis_url: str
) -> None:
    stock = stock_traceback(sync_conn, redis_url, func)  # nothing else runs on the loop meanwhile
    job = rq.Queue('q', connection=sync_conn).enqueue(func, 'boom')
    await Worker('q', connection=conn, concurrency=2, sync_jobs=sync_jobs).work(burst=True)
    in_hash, in_result = recorded(sync_conn, job.id)
    assert in_hash == in_result
    assert in_hash.startswith(HEADER + '  File "') and 'cli_jobs.py' in in_hash.splitlines()[1], in_hash
    assert 'aiorq_worker' not in in_hash and 'concurrent/futures' not in in_hash
    assert in_hash == from_job_frame(stock)
