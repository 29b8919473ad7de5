"""The worker's lean path (``aiorq.protocol.lean``) through a real worker: rq's job is built only
for the executions that need it (a job asking for its current job, callbacks, exception
handlers, lean's fallback rule), once, and what jobs read and save through it is rq's.

What the written data looks like against stock rq is proven by ``test_outcomes_diff.py`` (every
fallback kind: callbacks, retries, repeats, dependents, returned ``Retry``, TTL 0, irregular
hashes, ``get_current_job()``) and by the property tests in ``tests/protocol/test_lean_codec.py``.
"""

from __future__ import annotations

from typing import Any

import redis
import rq
import tasks
from redis.asyncio import Redis
from rq.job import JobStatus

import aiorq
from aiorq_worker import Worker
from aiorq_worker.events import Ending, Listener
from aiorq_worker.execution import Execution


class Built(Listener):
    """Which executions had rq's job built by the time they ended, and why the rule sent them there."""

    def __init__(self) -> None:
        self.built: dict[str, bool] = {}
        self.fallback: dict[str, str | None] = {}

    def job_ended(self, ex: Execution, ending: Ending) -> None:
        self.built[ex.job_id] = ex.rq_job_built
        self.fallback[ex.job_id] = ex.record.fallback


async def run_burst(conn: Redis, **options: Any) -> Built:
    worker = Worker('q', connection=conn, name='lean', concurrency=4, **options)
    built = Built()
    worker.events.add(built)
    await worker.work(burst=True)
    return built


async def test_rq_job_built_only_when_asked_for(conn: Redis, sync_conn: redis.Redis) -> None:
    q = rq.Queue('q', connection=sync_conn)
    q.enqueue(tasks.add, 1, 2, job_id='plain')
    q.enqueue(tasks.async_add, 1, 2, job_id='coro')
    q.enqueue(tasks.fail, 'no', job_id='failing')
    q.enqueue(tasks.current_rq_job, job_id='asks_rq', meta={'k': 'v'})
    q.enqueue(tasks.async_current_rq_job, job_id='asks_rq_async', meta={'k': 'w'})
    q.enqueue(tasks.introspect, 4, job_id='asks_aiorq')
    q.enqueue(tasks.stock_progress, 3, job_id='saves_meta', meta={'progress': 0, 'kept': True})
    q.enqueue(tasks.add, 1, 2, job_id='called_back', on_success=tasks.record_success)
    q.enqueue(tasks.fail, 'again', job_id='retried', retry=rq.Retry(max=1, interval=100))
    built = await run_burst(conn)
    assert built.built == {
        'plain': False,
        'coro': False,
        'failing': False,
        'asks_rq': True,
        'asks_rq_async': True,
        'asks_aiorq': True,
        'saves_meta': True,
        'called_back': True,
        'retried': True,
    }
    assert built.fallback['called_back'] == 'callbacks' and built.fallback['retried'] == 'retries'
    assert {k for k, v in built.fallback.items() if v is None} == set(built.built) - {'called_back', 'retried'}
    # What the jobs saw: rq's own Job class, their id, origin, call and meta.
    for job_id, meta in (('asks_rq', {'k': 'v'}), ('asks_rq_async', {'k': 'w'})):
        seen = rq.job.Job.fetch(job_id, connection=sync_conn).return_value()
        func = 'tasks.current_rq_job' if job_id == 'asks_rq' else 'tasks.async_current_rq_job'
        assert seen == {'class': 'rq.job.Job', 'id': job_id, 'meta': meta, 'origin': 'q', 'func_name': func, 'args': []}
    introspected = rq.job.Job.fetch('asks_aiorq', connection=sync_conn).return_value()
    assert introspected == {'id': 'asks_aiorq', 'origin': 'q', 'meta': {'progress': 4}, 'status': 'started'}
    # Meta a job saved survives its (lean) success write; rq's API reads it back.
    saved = rq.job.Job.fetch('saves_meta', connection=sync_conn)
    assert saved.get_status() == JobStatus.FINISHED and saved.meta == {'progress': 3, 'kept': True}
    assert saved.return_value() == 6
    # The fallback kinds did what rq does: the callback ran, the retry is scheduled.
    assert sync_conn.smembers('callbacks') == {b'success:called_back:3'}
    retried = rq.job.Job.fetch('retried', connection=sync_conn)
    assert retried.get_status() == JobStatus.SCHEDULED and retried.retries_left == 0
    assert 'retried' in rq.registry.ScheduledJobRegistry('q', connection=sync_conn)
    for job_id in ('plain', 'coro', 'called_back'):
        assert rq.job.Job.fetch(job_id, connection=sync_conn).get_status() == JobStatus.FINISHED
    assert rq.job.Job.fetch('failing', connection=sync_conn).get_status() == JobStatus.FAILED


async def test_exception_handlers_get_rq_job(conn: Redis, sync_conn: redis.Redis) -> None:
    """A failure builds rq's job only when there are exception handlers to give it to."""
    seen: list[Any] = []

    def handler(job: Any, *exc_info: Any) -> bool:
        seen.append((type(job), job.id, job.meta, exc_info[0]))
        return True

    q = rq.Queue('q', connection=sync_conn)
    q.enqueue(tasks.fail, 'no', job_id='handled', meta={'m': 1})
    built = await run_burst(conn, exception_handlers=[handler])
    assert built.built == {'handled': True}
    assert seen == [(rq.job.Job, 'handled', {'m': 1}, ValueError)]
    assert rq.job.Job.fetch('handled', connection=sync_conn).get_status() == JobStatus.FAILED


async def test_current_job_is_one_object_per_execution(conn: Redis) -> None:
    """``get_current_job()`` asked twice in one job (rq's and aiorq's): one object each, built once."""
    q = aiorq.Queue('q', connection=conn)
    job = await q.enqueue(tasks.current_job_identity)
    built = await run_burst(conn)
    assert built.built == {job.id: True}
    assert await job.result == [True, True]
