"""``job.wait()`` for every final state, with the jobs run by aiorq's worker and by a stock
``rq worker`` process. Each wait starts before any worker does, so it really waits."""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import rq.command
import typed_tasks
from processes import Processes
from redis.asyncio import Redis
from waiting import wait_for

import aiorq
from aiorq import Job, Result
from aiorq.job import WAIT_RECHECK_INTERVAL
from aiorq_worker import Worker

QUEUE = typed_tasks.QUEUE
Done = Callable[[], Awaitable[None]]


@pytest.fixture
def current(conn: Redis) -> Iterator[Redis]:
    """typed_tasks enqueue on the current connection."""
    aiorq.push_connection(conn)
    yield conn
    assert aiorq.pop_connection() is conn


@pytest.fixture(params=['aiorq', 'rq'])
def start_worker(request: Any, conn: Redis, redis_url: str, processes: Processes) -> Callable[[], Done]:
    """Starts a burst worker of either kind on the queue; what it returns waits for it to exit."""

    def start() -> Done:
        if request.param == 'aiorq':
            worker = Worker(QUEUE, connection=conn, name=f'typed-{uuid.uuid4().hex}')
            task = asyncio.ensure_future(worker.work(burst=True))

            async def done() -> None:
                await asyncio.wait_for(task, 60)

            return done
        proc = processes.start('rq', [sys.executable, '-m', 'rq.cli', 'worker', '--burst', '--url', redis_url, QUEUE])

        async def drained() -> None:
            # Done when it says so: its exit can stall up to a minute after that (rq 3.0 stops its
            # pubsub thread, which redis-py 8 may be blocking in for rq's sleep_time=60), and the
            # fixture ends it anyway.
            await wait_for(lambda: proc.poll() is not None or 'done, quitting' in processes.log(proc), 60)
            assert proc.poll() in (None, 0), processes.log(proc)

        return drained

    return start


async def waiting(job: Job[Any], timeout: float = 60) -> asyncio.Task[Any]:
    """``job.wait(timeout)`` started, and seen to be waiting."""
    waiter = asyncio.ensure_future(job.wait(timeout=timeout))
    await asyncio.sleep(0.3)
    assert not waiter.done()
    return waiter


async def test_finished(current: Redis, start_worker: Callable[[], Done]) -> None:
    resized = await typed_tasks.resize.delay('a.png', width=640)
    added = await typed_tasks.add.options(job_id='sum').delay(2, b=3)
    waiters = [await waiting(resized), await waiting(added)]
    done = start_worker()
    assert await waiters[0] == b'a.png@640'
    assert await waiters[1] == 5
    await done()
    # Finished already: at once, whatever the timeout.
    assert await resized.wait(timeout=0) == b'a.png@640'
    assert await (await Job.fetch('sum', connection=current)).wait() == 5


async def test_failed(current: Redis, start_worker: Callable[[], Done]) -> None:
    job = await typed_tasks.explode.delay('it broke')
    waiter = await waiting(job)
    done = start_worker()
    with pytest.raises(aiorq.JobFailed) as failed:
        await waiter
    await done()
    e = failed.value
    assert type(e) is aiorq.JobFailed
    assert (e.job_id, e.exc_type, e.exc_message) == (job.id, 'typed_tasks.OopsError', 'it broke')
    assert e.traceback.startswith('Traceback (most recent call last):')
    assert 'raise OopsError(message)' in e.traceback
    assert e.result is not None and e.result.type == Result.Type.FAILED
    assert str(e) == f'job {job.id} failed: typed_tasks.OopsError: it broke'
    with pytest.raises(aiorq.JobFailed):
        await job.wait(timeout=0)


async def test_stopped(current: Redis, sync_conn: redis.Redis, start_worker: Callable[[], Done]) -> None:
    job = await typed_tasks.nap.delay(60)
    waiter = await waiting(job)
    done = start_worker()
    await wait_for(lambda: sync_conn.hget(job.key, 'status') == b'started', 30)
    rq.command.send_stop_job_command(sync_conn, job.id)
    with pytest.raises(aiorq.JobStopped) as stopped:
        await asyncio.wait_for(waiter, 30)
    await done()
    assert stopped.value.exc_type is None
    assert stopped.value.exc_message == 'Job stopped by user, work-horse terminated.'
    assert str(stopped.value) == f'job {job.id} was stopped: Job stopped by user, work-horse terminated.'


async def test_canceled(current: Redis, start_worker: Callable[[], Done]) -> None:
    """A cancel writes no result: the wait notices it at its next status check."""
    job = await typed_tasks.add.delay(1, 2)
    waiter = await waiting(job)
    await job.cancel()
    with pytest.raises(aiorq.JobCanceled) as canceled:
        await asyncio.wait_for(waiter, WAIT_RECHECK_INTERVAL + 5)
    assert str(canceled.value) == f'job {job.id} was canceled'
    assert canceled.value.result is None
    await start_worker()()
    assert await job.get_status() == aiorq.JobStatus.CANCELED  # never ran
    with pytest.raises(aiorq.JobCanceled):
        await job.wait(timeout=0)


async def test_retried(current: Redis, tmp_path: Path, start_worker: Callable[[], Done]) -> None:
    """``flaky`` has Retry(max=2): the wait lasts through its last attempt, whatever it gives."""
    recovers = await typed_tasks.flaky.delay(str(tmp_path / 'recovers'), 2)
    never = await typed_tasks.flaky.delay(str(tmp_path / 'never'), 3)
    waiters = [await waiting(recovers), await waiting(never)]
    done = start_worker()
    assert await waiters[0] == 'succeeded on attempt 3'
    with pytest.raises(aiorq.JobFailed) as failed:
        await waiters[1]
    await done()
    assert failed.value.exc_message == 'attempt 3 fails'
    assert [len((tmp_path / n).read_text().splitlines()) for n in ('recovers', 'never')] == [3, 3]
