"""Prometheus metrics of an aiorq worker started from Python: ``python examples/observability_metrics.py``.

The worker serves ``/metrics`` on a free port of 127.0.0.1 (``metrics_port=0``) while it works.
The script enqueues one job, waits for its result, reads ``/metrics`` as Prometheus would, prints
the aiorq series, and stops the worker. Redis: ``$REDIS_URL``, else redis://127.0.0.1:6399/0.
"""

from __future__ import annotations

import asyncio
import os
import urllib.request

from mylib import add
from redis.asyncio import Redis

import aiorq
from aiorq_worker import Worker

REDIS_URL = os.environ.get('REDIS_URL', 'redis://127.0.0.1:6399/0')


def scrape(port: int) -> str:
    with urllib.request.urlopen(f'http://127.0.0.1:{port}/metrics', timeout=5) as response:
        return response.read().decode()


async def main() -> None:
    redis = Redis.from_url(REDIS_URL)
    worker = Worker(['high', 'default'], connection=redis, metrics_port=0, metrics_address='127.0.0.1')
    working = asyncio.create_task(worker.work())

    job = await aiorq.Queue('high', connection=redis).enqueue(add, 1, 2)
    await job.latest_result(timeout=30)  # the worker has run it
    while worker.successful_job_count < 1:  # and counted it (just after writing its result)
        await asyncio.sleep(0.01)
    assert worker.metrics is not None and worker.metrics.port is not None  # the port it took
    text = await asyncio.to_thread(scrape, worker.metrics.port)  # a scrape reads the worker's loop
    for line in text.splitlines():
        if line.startswith(('aiorq_jobs_finished_total', 'aiorq_queue_depth')):
            print(line)

    worker.request_stop()  # warm shutdown, as on SIGTERM
    await working
    await redis.aclose()


if __name__ == '__main__':
    asyncio.run(main())
