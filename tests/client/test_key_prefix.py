"""``RQ_KEY_PREFIX`` (read by rq at import time) moves every key aiorq writes, as it does rq's."""

from __future__ import annotations

import os
import subprocess
import sys

import redis

SCRIPT = r"""
import asyncio, sys
import rq, tasks
from rq.job import Job as RQJob
import aiorq
from aiorq_worker import Worker

async def main(url):
    conn = aiorq.from_url(url)
    q = aiorq.Queue('q', connection=conn)
    job = await q.enqueue(tasks.add, 2, 3)
    await q.enqueue(tasks.add, 1, 1, depends_on=job)
    await Worker('q', connection=conn, name='prefixed').work(burst=True)
    assert await job.result == 5
    stock = RQJob.fetch(job.id, connection=rq.Queue('q', connection=__import__('redis').Redis.from_url(url)).connection)
    assert stock.get_status() == 'finished' and stock.return_value() == 5
    await conn.aclose()

asyncio.run(main(sys.argv[1]))
"""


def test_custom_prefix(redis_url: str, sync_conn: redis.Redis) -> None:
    env = {**os.environ, 'RQ_KEY_PREFIX': '{app}'}
    done = subprocess.run(
        [sys.executable, '-c', SCRIPT, redis_url], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    keys = {k.decode() for k in sync_conn.keys('*')}
    assert keys, 'nothing was written'
    assert all(k.startswith('{app}:') for k in keys), sorted(keys)
    assert '{app}:queues' in keys and any(k.startswith('{app}:finished:') for k in keys)
