"""rq's exception-handler chain and abandoned-job policy in the aiorq worker (``aiorq.handlers``,
shared with the registries' ``cleanup()``): handlers in order, an explicit falsy return stops the
chain, coroutine handlers awaited, blocking ones off the event loop, a raising one logged; an
abandoned job's failure callback, then the handlers, even when the callback raises."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest
import redis
import tasks
from redis.asyncio import Redis
from rq.exceptions import AbandonedJobError
from rq.job import Job as RQJob

from aiorq import JobStatus, Queue
from aiorq_worker import Worker


def chain(seen: list[Any]) -> list[Any]:
    """Four handlers: one that raises, a coroutine, a blocking one that stops the chain, one never reached."""
    loop_thread = threading.get_ident()

    def broken(job: Any, *exc_info: Any) -> None:
        raise RuntimeError('a broken handler')

    async def on_loop(job: Any, *exc_info: Any) -> None:
        seen.append(('coroutine', type(job), job.id, exc_info[0]))

    def blocking(job: Any, *exc_info: Any) -> bool:
        time.sleep(0.05)  # would hold every job on the loop if it ran there
        seen.append(('blocking', threading.get_ident() != loop_thread, job.id))
        return False

    def never(job: Any, *exc_info: Any) -> None:
        seen.append('never')

    return [broken, on_loop, blocking, never]


async def test_a_failed_job_goes_through_the_chain(conn: Redis, caplog: pytest.LogCaptureFixture) -> None:
    job = await Queue('q', connection=conn).enqueue(tasks.fail, 'handled')
    seen: list[Any] = []
    caplog.set_level(logging.ERROR, 'aiorq.handlers')
    await Worker('q', connection=conn, name='handled', exception_handlers=chain(seen)).work(burst=True)
    assert seen == [('coroutine', RQJob, job.id, ValueError), ('blocking', True, job.id)]
    assert 'a broken handler' in caplog.text
    assert await job.get_status() == JobStatus.FAILED


def abandon(sync_conn: redis.Redis, job_id: str) -> None:
    """What Redis holds once the job's worker died mid-job and its heartbeat deadline passed."""
    sync_conn.lrem('rq:queue:q', 1, job_id)
    sync_conn.hset(f'rq:job:{job_id}', 'status', 'started')
    sync_conn.zadd('rq:wip:q', {f'{job_id}:dead': int(time.time()) - 5})


async def test_an_abandoned_job_gets_its_failure_callback_then_the_handlers(
    conn: Redis, sync_conn: redis.Redis
) -> None:
    q = Queue('q', connection=conn)
    lost = await q.enqueue(tasks.add, 1, 2, on_failure=tasks.record_failure)
    # A failure callback that raises (wrong arguments) is logged; the handlers run all the same.
    broken = await q.enqueue(tasks.add, 1, 2, on_failure=tasks.fail)
    for job in (lost, broken):
        abandon(sync_conn, job.id)
    seen: list[Any] = []
    await Worker('q', connection=conn, name='janitor', exception_handlers=chain(seen)).work(burst=True)
    assert sync_conn.smembers('callbacks') == {f'failure:{lost.id}:AbandonedJobError'.encode()}
    assert sorted(seen) == sorted(
        [('coroutine', RQJob, j.id, AbandonedJobError) for j in (lost, broken)]
        + [('blocking', True, j.id) for j in (lost, broken)]
    )
    assert [await j.get_status() for j in (lost, broken)] == [JobStatus.FAILED] * 2
