"""Every enqueue variant, once by stock rq and once by aiorq: identical Redis state."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import rq
import tasks
from diffkit import a, all_enqueue_options, compare, decorator_of
from rq.exceptions import DuplicateJobError

CASES: dict[str, Any] = {}


def case(fn: Any) -> Any:
    CASES[fn.__name__] = fn
    return fn


@case
async def plain(lib: Any, conn: Any) -> Any:
    q = lib.Queue('q', connection=conn)
    return await a(q.enqueue(tasks.add, 1, 2, job_id='j1'))


@case
async def generated_id(lib: Any, conn: Any) -> Any:
    q = lib.Queue('q', connection=conn)
    return await a(q.enqueue(tasks.add, 1, 2))


@case
async def at_front(lib: Any, conn: Any) -> Any:
    q = lib.Queue('q', connection=conn)
    await a(q.enqueue(tasks.add, 1, 2, job_id='j1'))
    return await a(q.enqueue(tasks.add, 3, 4, job_id='j2', at_front=True))


@case
async def every_option(lib: Any, conn: Any) -> Any:
    q = lib.Queue('q', connection=conn)
    return await a(
        q.enqueue(tasks.echo, 1, 'two', key=[3], **all_enqueue_options('j1'))
    )


@case
async def retry_at_front(lib: Any, conn: Any) -> Any:
    q = lib.Queue('q', connection=conn)
    return await a(q.enqueue(tasks.add, 1, 2, job_id='j1', retry=rq.Retry(2, enqueue_at_front=True), result_ttl=-1))


@case
async def enqueue_call(lib: Any, conn: Any) -> Any:
    q = lib.Queue('q', connection=conn, default_timeout=30)
    return await a(q.enqueue_call(tasks.echo, args=(1,), kwargs={'job_timeout': 'not an option'}, job_id='j1'))


@case
async def explicit_args(lib: Any, conn: Any) -> Any:
    q = lib.Queue('q', connection=conn)
    return await a(q.enqueue(tasks.echo, args=(1, 2), kwargs={'description': 'kw'}, job_id='j1'))


@case
async def by_name(lib: Any, conn: Any) -> Any:
    q = lib.Queue('q', connection=conn)
    return await a(q.enqueue('tasks.add', 1, 2, job_id='j1'))


@case
async def bound_method(lib: Any, conn: Any) -> Any:
    q = lib.Queue('q', connection=conn)
    return await a(q.enqueue(tasks.Adder(5).add, 1, job_id='j1'))


@case
async def json_serializer(lib: Any, conn: Any) -> Any:
    q = lib.Queue('q', connection=conn, serializer='json')
    return await a(q.enqueue(tasks.add, 1, 2, job_id='j1', meta={'a': 1}))


@case
async def coroutine_function(lib: Any, conn: Any) -> Any:
    q = lib.Queue('q', connection=conn)
    return await a(q.enqueue(tasks.async_add, 1, 2, job_id='j1'))


@case
async def deferred(lib: Any, conn: Any) -> Any:
    q = lib.Queue('q', connection=conn)
    parent = await a(q.enqueue(tasks.add, 1, 2, job_id='parent'))
    return await a(q.enqueue(tasks.add, 3, 4, job_id='child', depends_on=parent, ttl=100))


@case
async def deferred_by_id_list(lib: Any, conn: Any) -> Any:
    q = lib.Queue('q', connection=conn)
    await a(q.enqueue(tasks.add, 1, 2, job_id='p1'))
    await a(q.enqueue(tasks.add, 1, 2, job_id='p2'))
    return await a(q.enqueue(tasks.add, 3, 4, job_id='child', depends_on=['p1', 'p2', 'missing']))


@case
async def dependency_met(lib: Any, conn: Any) -> Any:
    q = lib.Queue('q', connection=conn)
    await a(q.enqueue(tasks.add, 1, 2, job_id='parent'))
    await a(conn.hset(rq.job.Job.key_for('parent'), 'status', 'finished'))
    return await a(q.enqueue(tasks.add, 3, 4, job_id='child', depends_on='parent'))


@case
async def dependency_allow_failure(lib: Any, conn: Any) -> Any:
    q = lib.Queue('q', connection=conn)
    await a(q.enqueue(tasks.add, 1, 2, job_id='parent'))
    await a(conn.hset(rq.job.Job.key_for('parent'), 'status', 'failed'))
    dep = rq.job.Dependency(jobs=['parent'], allow_failure=True, enqueue_at_front=True)
    return await a(q.enqueue(tasks.add, 3, 4, job_id='child', depends_on=dep))


@case
async def dependency_failed_not_allowed(lib: Any, conn: Any) -> Any:
    q = lib.Queue('q', connection=conn)
    await a(q.enqueue(tasks.add, 1, 2, job_id='parent'))
    await a(conn.hset(rq.job.Job.key_for('parent'), 'status', 'failed'))
    return await a(q.enqueue(tasks.add, 3, 4, job_id='child', depends_on=rq.job.Dependency(jobs=['parent'])))


@case
async def enqueue_at(lib: Any, conn: Any) -> Any:
    q = lib.Queue('q', connection=conn)
    when = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    return await a(q.enqueue_at(when, tasks.add, 1, 2, job_id='j1', at_front=True, ttl=50))


@case
async def enqueue_at_naive(lib: Any, conn: Any) -> Any:
    q = lib.Queue('q', connection=conn)
    return await a(q.enqueue_at(datetime(2030, 6, 1, 12, 0), tasks.add, 1, 2, job_id='j1'))


@case
async def enqueue_in(lib: Any, conn: Any) -> Any:
    q = lib.Queue('q', connection=conn)
    return await a(q.enqueue_in(timedelta(minutes=5), tasks.add, 1, 2, job_id='j1'))


@case
async def schedule_job(lib: Any, conn: Any) -> Any:
    q = lib.Queue('q', connection=conn)
    job = q.create_job(tasks.add, args=(1, 2), job_id='j1')
    return await a(q.schedule_job(job, datetime(2031, 1, 1, tzinfo=timezone.utc)))


@case
async def unique(lib: Any, conn: Any) -> Any:
    q = lib.Queue('q', connection=conn)
    job = await a(q.enqueue(tasks.add, 1, 2, job_id='j1', unique=True, ttl=30))
    with pytest.raises(DuplicateJobError):
        await a(q.enqueue(tasks.add, 1, 2, job_id='j1', unique=True))
    return job


@case
async def unique_at(lib: Any, conn: Any) -> Any:
    q = lib.Queue('q', connection=conn)
    when = datetime(2030, 1, 2, tzinfo=timezone.utc)
    job = await a(q.enqueue_at(when, tasks.add, 1, 2, job_id='j1', unique=True))
    with pytest.raises(DuplicateJobError):
        await a(q.enqueue_at(when, tasks.add, 1, 2, job_id='j1', unique=True))
    return job


@case
async def rate_limited(lib: Any, conn: Any) -> Any:
    q = lib.Queue('q', connection=conn)
    limit = rq.RateLimit('api', 2)
    return [await a(q.enqueue(tasks.add, i, i, job_id=f'j{i}', rate_limit=limit, at_front=i == 2)) for i in range(3)]


@case
async def enqueue_job(lib: Any, conn: Any) -> Any:
    q = lib.Queue('q', connection=conn)
    job = q.create_job(tasks.add, args=(1, 2), job_id='j1', result_ttl=10)
    return await a(q.enqueue_job(job, at_front=True))


@case
async def enqueue_many(lib: Any, conn: Any) -> Any:
    q = lib.Queue('q', connection=conn)
    await a(q.enqueue(tasks.add, 0, 0, job_id='parent'))
    datas = [
        q.prepare_data(tasks.add, (1, 2), job_id='m1', timeout=20),
        q.prepare_data(tasks.add, (3, 4), job_id='m2', at_front=True, meta={'x': 1}),
        q.prepare_data(tasks.add, (5, 6), job_id='m3', depends_on='parent', ttl=40),
        q.prepare_data(tasks.add, (7, 8), job_id='m4', depends_on='nonexistent'),
    ]
    return await a(q.enqueue_many(datas, group_id='g1'))


@case
async def enqueue_many_plain(lib: Any, conn: Any) -> Any:
    # No dependencies: aiorq writes these in one atomic script call (rq: one MULTI).
    q = lib.Queue('q', connection=conn)
    datas = [
        q.prepare_data(tasks.add, (1, 2), job_id='m1', timeout=20),
        q.prepare_data(tasks.add, (3, 4), job_id='m2', at_front=True, meta={'x': 1}),
        q.prepare_data(tasks.add, (5, 6), job_id='m3', ttl=40, result_ttl=5),
        q.prepare_data(tasks.echo, ('x',), job_id='m4', at_front=True, description='d'),
    ]
    return await a(q.enqueue_many(datas))


@case
async def with_pipeline(lib: Any, conn: Any) -> Any:
    q = lib.Queue('q', connection=conn)
    pipe = conn.pipeline()
    job = await a(q.enqueue(tasks.add, 1, 2, job_id='j1', pipeline=pipe))
    assert await a(conn.exists(rq.job.Job.key_for('j1'))) == 0
    await a(pipe.execute())
    return job


@case
async def decorator(lib: Any, conn: Any) -> Any:
    # The decorator returns the function itself (so func_name stays tasks.summator) with
    # delay/enqueue attached; each library re-decorates the same module function in turn.
    summator = decorator_of(lib)('q', connection=conn, timeout=15, result_ttl=5, at_front=True)(tasks.summator)
    assert summator is tasks.summator
    await a(summator.delay(1, 2, job_id='d1'))
    return await a(summator.enqueue(3, 4, job_id='d2', at_front=False))


@pytest.mark.parametrize('name', sorted(CASES))
async def test_same_state(name: str, rq_conn: Any, aconn: Any, aiorq_sync: Any) -> None:
    await compare(CASES[name], rq_conn, aconn, aiorq_sync)
