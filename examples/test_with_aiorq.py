"""Testing code that enqueues, with pytest-asyncio: the queued jobs run in the test's own event loop.

The code of ``docs/testing.md`` (the tests check that its blocks are taken from here). It needs a
Redis database that the tests may empty, never one that holds data you want to keep::

    RQ_REDIS_URL=redis://127.0.0.1:6379/15 pytest examples/test_with_aiorq.py

Without ``$RQ_REDIS_URL`` (or ``$REDIS_URL``) every test is skipped.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import mylib
import pytest
import pytest_asyncio
from redis.asyncio import Redis

import aiorq
from aiorq import JobStatus, Queue, Result
from aiorq.testing import run_queued, worker_running

pytestmark = pytest.mark.asyncio  # not needed with asyncio_mode = "auto"

REDIS_URL = os.environ.get('RQ_REDIS_URL') or os.environ.get('REDIS_URL')


@pytest_asyncio.fixture
async def redis() -> AsyncIterator[Redis]:
    if REDIS_URL is None:
        pytest.skip('set RQ_REDIS_URL to a Redis database the tests may empty')
    client = aiorq.from_url(REDIS_URL)
    await client.flushdb()  # each test starts from an empty database
    yield client
    await client.aclose()


@pytest.fixture
def queue(redis: Redis) -> Queue:
    return Queue('my_queue', connection=redis)


async def test_job_runs(queue: Queue) -> None:
    job = await queue.enqueue(mylib.add, 1, 2)
    ran = await run_queued(queue)  # runs every queued job, then returns
    assert ran.succeeded == 1
    assert await job.get_status() == JobStatus.FINISHED
    assert await job.result == 3


async def test_failure_is_recorded(queue: Queue) -> None:
    job = await queue.enqueue(mylib.divide, 1, 0)
    ran = await run_queued(queue)
    assert ran.failed == 1
    assert await job.get_status() == JobStatus.FAILED
    assert await queue.failed_job_registry.get_job_ids() == [job.id]
    result = await job.latest_result()
    assert result is not None and result.type == Result.Type.FAILED
    assert 'ZeroDivisionError' in (result.exc_string or '')


async def test_dependents_run_too(queue: Queue) -> None:
    first = await queue.enqueue(mylib.add, 1, 2)
    second = await queue.enqueue(mylib.add, 3, 4, depends_on=first)
    assert await second.get_status() == JobStatus.DEFERRED
    await run_queued(queue)  # ``second`` is released when ``first`` finishes, and runs too
    assert await second.result == 7


async def test_jobs_enqueued_by_jobs_run_too(queue: Queue, redis: Redis) -> None:
    fan_out = await queue.enqueue(mylib.sum_of_squares, [1, 2, 3])
    ran = await run_queued(queue)
    assert ran.succeeded == 5  # sum_of_squares, three squares, total
    total = await aiorq.Job.fetch(await fan_out.result, connection=redis)
    assert await total.result == 14


async def test_with_a_worker_running(queue: Queue) -> None:
    async with worker_running(queue) as worker:
        assert await aiorq.count_workers(queue.connection, queue=queue) == 1
        job = await queue.enqueue(mylib.add, 2, 3)
        await job.latest_result(timeout=5)  # waits on the job's result stream, no polling
        assert await job.result == 5
    # On leaving, the worker finished its running jobs and unregistered.
    assert worker.successful_job_count == 1
    assert await aiorq.count_workers(queue.connection, queue=queue) == 0
