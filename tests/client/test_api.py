"""The client API's own behaviour: awaitable properties, connections, reading back, bad input."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
import zlib
from datetime import timedelta
from typing import Any

import pytest
import redis
import rq
import tasks
from redis.asyncio import Redis
from redis_server import free_port
from rq.exceptions import DeserializationError, NoSuchJobError
from rq.job import Job as RQJob

import aiorq
from aiorq import Job, JobStatus, Queue


def stock_worker(conn: redis.Redis, *queues: str) -> None:
    rq.SimpleWorker([rq.Queue(q, connection=conn) for q in queues or ('q',)], connection=conn).work(
        burst=True, logging_level='WARNING'
    )


async def test_awaitable_properties_refuse_truth_tests(conn: Redis) -> None:
    q = Queue('q', connection=conn)
    job = await q.enqueue(tasks.add, 1, 2)
    assert await q.count == 1
    assert await q.job_ids == [job.id]
    assert [j.id for j in await q.jobs] == [job.id]
    assert await job.is_queued is True
    assert await job.is_finished is False
    with pytest.raises(TypeError, match='await job.is_finished'):
        if job.is_finished:
            pass
    with pytest.raises(TypeError, match='await queue.count'):
        len(q)
    registry = q.finished_job_registry
    with pytest.raises(TypeError, match='await registry.count'):
        len(registry)
    with pytest.raises(TypeError, match='registry.contains'):
        _ = job in registry
    assert await registry.count == 0
    assert not await registry.contains(job)


async def test_every_status_property(conn: Redis, sync_conn: redis.Redis) -> None:
    job = await Queue('q', connection=conn).enqueue(tasks.add, 1, 2)
    props = {
        'finished': 'is_finished',
        'queued': 'is_queued',
        'failed': 'is_failed',
        'started': 'is_started',
        'deferred': 'is_deferred',
        'canceled': 'is_canceled',
        'scheduled': 'is_scheduled',
        'stopped': 'is_stopped',
        'ready_to_enqueue': 'is_ready_to_enqueue',
    }
    for status, prop in props.items():
        sync_conn.hset(RQJob.key_for(job.id), 'status', status)
        assert await job.get_status() == JobStatus(status)
        assert [name for name in props.values() if await getattr(job, name)] == [prop]


async def test_results_written_by_stock_worker(conn: Redis, sync_conn: redis.Redis) -> None:
    q = Queue('q', connection=conn)
    ok = await q.enqueue(tasks.add, 1, 2)
    bad = await q.enqueue(tasks.fail, 'nope')
    assert await ok.result is None
    assert await ok.latest_result() is None
    stock_worker(sync_conn)
    assert await ok.result == 3
    assert await ok.return_value() == 3
    latest = await ok.latest_result()
    assert latest is not None and latest.type == aiorq.Result.Type.SUCCESSFUL
    assert await ok.is_finished
    assert await bad.is_failed
    assert await bad.result is None
    failure = await bad.latest_result()
    assert failure is not None and failure.type == aiorq.Result.Type.FAILED
    assert 'ValueError: nope' in (failure.exc_string or '')
    assert [r.type for r in await bad.results()] == [aiorq.Result.Type.FAILED]
    assert await bad.result_count() == 1
    await bad.delete_results()
    assert await bad.result_count() == 0 and await bad.latest_result() is None
    assert await q.finished_job_registry.get_job_ids() == [ok.id]
    assert await q.failed_job_registry.get_job_ids() == [bad.id]


async def test_latest_result_waits_without_polling(conn: Redis, redis_url: str) -> None:
    job = await Queue('q', connection=conn).enqueue(tasks.add, 2, 2)
    started = time.monotonic()
    assert await job.latest_result(timeout=0.3) is None
    assert 0.25 <= time.monotonic() - started < 2
    waiter = asyncio.ensure_future(job.latest_result(timeout=10))
    await asyncio.sleep(0.2)
    assert not waiter.done()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, '-m', 'rq.cli', 'worker', '--burst', '--url', redis_url, 'q'
    )
    assert await asyncio.wait_for(proc.wait(), 30) == 0
    result = await asyncio.wait_for(waiter, 5)
    assert result is not None and result.return_value == 4
    # An existing entry is returned at once.
    started = time.monotonic()
    assert (await job.latest_result(timeout=10)) is not None
    assert time.monotonic() - started < 1


async def test_fetch_reads_every_field_stock_rq_wrote(conn: Redis, sync_conn: redis.Redis) -> None:
    rq_q = rq.Queue('q', connection=sync_conn)
    parent = rq_q.enqueue(tasks.add, 1, 1)
    stock = rq_q.enqueue(
        tasks.echo,
        1,
        key='v',
        job_timeout=77,
        result_ttl=10,
        failure_ttl=20,
        ttl=30,
        meta={'m': 1},
        retry=rq.Retry(2, [1, 2]),
        repeat=rq.Repeat(2, 5),
        description='d',
        depends_on=parent,
        on_success=rq.Callback(tasks.on_success_cb, timeout=3),
    )
    job = await Job.fetch(stock.id, connection=conn)
    stock = RQJob.fetch(stock.id, connection=sync_conn)
    for name in (
        'id',
        'origin',
        'description',
        'created_at',
        'enqueued_at',
        'started_at',
        'ended_at',
        'timeout',
        'result_ttl',
        'failure_ttl',
        'ttl',
        'meta',
        'retries_left',
        'retry_intervals',
        'repeats_left',
        'repeat_intervals',
        'func_name',
        'args',
        'kwargs',
        'instance',
        'worker_name',
        'group_id',
        'success_callback_timeout',
        '_dependency_ids',
        'allow_dependency_failures',
        'enqueue_at_front',
    ):
        assert getattr(job, name) == getattr(stock, name), name
    assert job.to_dict() == {k: (v.value if isinstance(v, JobStatus) else v) for k, v in stock.to_dict().items()}
    assert await job.get_status() == stock.get_status() == JobStatus.DEFERRED
    assert (await job.dependency).id == parent.id  # type: ignore[union-attr]
    assert await (await Job.fetch(parent.id, connection=conn)).dependent_ids == [stock.id]
    assert await job.dependency_ids == [parent.id]
    assert job.func is tasks.echo


async def test_missing_and_corrupt_jobs(conn: Redis, sync_conn: redis.Redis) -> None:
    q = Queue('q', connection=conn)
    with pytest.raises(NoSuchJobError):
        await Job.fetch('nope', connection=conn)
    good = await q.enqueue(tasks.add, 1, 2)
    bad = await q.enqueue(tasks.add, 3, 4)
    sync_conn.hset(RQJob.key_for(bad.id), 'data', zlib.compress(b'not a pickle'))
    fetched = await Job.fetch(bad.id, connection=conn)
    assert fetched.origin == 'q'
    with pytest.raises(DeserializationError, match=bad.id):
        _ = fetched.func_name
    with pytest.raises(DeserializationError, match=bad.id):
        _ = fetched.args
    assert [j.id for j in await q.get_jobs()] == [good.id, bad.id]
    assert await Job.fetch_many([good.id, 'missing'], connection=conn) == [good, None]


async def test_deliberate_deviations(conn: Redis, sync_conn: redis.Redis) -> None:
    q = Queue('q', connection=conn)

    def nested() -> None:
        pass

    with pytest.raises(ValueError, match='lambda'):
        await q.enqueue(lambda: None)
    with pytest.raises(ValueError, match='locals'):
        await q.enqueue(nested)
    with pytest.raises(ValueError, match='does not import back|different object'):
        await q.enqueue(_not_importable)
    with pytest.raises(TypeError, match='cannot be serialized'):
        await q.enqueue(tasks.echo, asyncio.Lock().__class__, lock=_Unpicklable())
    assert sync_conn.keys('*') == []
    # In a batch: the one-call path (no dependencies) and the per-job path (a dependency) both
    # name the job and write nothing for any job of the batch.
    fine = Queue.prepare_data(tasks.add, (1, 2))
    bad = Queue.prepare_data(tasks.echo, kwargs={'lock': _Unpicklable()})
    dependent = Queue.prepare_data(tasks.add, (3, 4), depends_on='parent')
    for batch in ([fine, bad], [fine, dependent, bad]):
        with pytest.raises(TypeError, match='Job for tests.tasks.echo|Job for tasks.echo'):
            await q.enqueue_many(batch)
        assert sync_conn.keys('*') == []
    with pytest.raises(TypeError, match='cannot be serialized'):
        q.create_job(tasks.echo, kwargs={'lock': _Unpicklable()})
    with pytest.raises(ValueError, match='synchronous queues'):
        Queue('q', connection=conn, is_async=False)


class _Unpicklable:
    def __reduce__(self) -> Any:
        raise TypeError('no pickling here')


def _make_unimportable() -> Any:
    def f() -> None:
        pass

    f.__qualname__ = 'not_there'
    f.__module__ = 'tasks'
    return f


_not_importable = _make_unimportable()


async def test_coroutine_callback_warns(conn: Redis, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger='aiorq.queue'):
        await Queue('q', connection=conn).enqueue(tasks.add, 1, 2, on_success=tasks.async_callback)
    assert 'stock rq 3.0 workers reject coroutine callbacks' in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger='aiorq.queue'):
        await Queue('q', connection=conn).enqueue(tasks.add, 1, 2, on_success=rq.Callback(tasks.on_success_cb))
    assert caplog.text == ''


async def test_unreachable_redis_fails_fast() -> None:
    client = aiorq.from_url(f'redis://127.0.0.1:{free_port()}/0')
    started = time.monotonic()
    with pytest.raises(redis.exceptions.ConnectionError):
        await Queue('q', connection=client).enqueue(tasks.add, 1, 2)
    assert time.monotonic() - started < 2
    await client.aclose()


async def test_connection_stack(conn: Redis, redis_url: str) -> None:
    with pytest.raises(aiorq.NoRedisConnectionException):
        aiorq.get_current_connection()
    with pytest.raises(aiorq.NoRedisConnectionException):
        aiorq.pop_connection()
    unbound = Queue('q')
    with pytest.raises(aiorq.NoRedisConnectionException):
        await unbound.count
    other = Redis.from_url(redis_url)
    aiorq.push_connection(conn)
    try:
        bound = Queue('q')
        assert bound.connection is conn

        async def sibling() -> Redis:
            aiorq.push_connection(other)
            await asyncio.sleep(0.05)
            return aiorq.get_current_connection()

        async def observer() -> Redis:
            await asyncio.sleep(0.02)
            return aiorq.get_current_connection()

        seen = await asyncio.gather(sibling(), observer())
        assert seen == [other, conn]
        assert aiorq.get_current_connection() is conn
        assert unbound.connection is conn  # looked up at each call
        job = await unbound.enqueue(tasks.add, 1, 2)
        assert (await Job.fetch(job.id)).id == job.id
        aiorq.push_connection(other)
        assert bound.connection is conn  # taken at construction
        assert aiorq.pop_connection() is other
    finally:
        assert aiorq.pop_connection() is conn
        await other.aclose()


async def test_decorator_resolves_connection_when_called(conn: Redis) -> None:
    decorated = aiorq.job('q')(tasks.summator)
    assert decorated is tasks.summator
    aiorq.push_connection(conn)
    try:
        job = await tasks.summator.delay(1, 2)
    finally:
        aiorq.pop_connection()
    assert job.func_name == 'tasks.summator'
    assert await Queue('q', connection=conn).job_ids == [job.id]


async def test_queue_reads(conn: Redis) -> None:
    q = Queue('q', connection=conn)
    jobs = [await q.enqueue(tasks.add, i, i) for i in range(4)]
    assert await q.get_job_ids(1, 2) == [jobs[1].id, jobs[2].id]
    assert await q.get_job_ids(0, 0) == []
    assert await q.get_job_position(jobs[2]) == 2
    assert await jobs[3].get_position() == 3
    assert not await q.is_empty()
    assert [x.name for x in await Queue.all(connection=conn)] == ['q']
    await q.enqueue_in(timedelta(seconds=60), tasks.add, 1, 1)
    assert len(await q.scheduled_job_registry.get_job_ids()) == 1
    assert await q.empty() == 4
    assert await q.is_empty()


async def test_workers_and_suspension(conn: Redis, sync_conn: redis.Redis) -> None:
    assert await aiorq.get_workers(connection=conn) == []
    worker = rq.SimpleWorker([rq.Queue('q', connection=sync_conn)], connection=sync_conn, name='reader')
    worker.register_birth()
    try:
        found = await aiorq.get_workers(connection=conn)
        assert [w.name for w in found] == ['reader']
        assert found[0].queue_names == ['q'] and found[0].pid == worker.pid
        assert await aiorq.count_workers(connection=conn, queue='q') == 1
    finally:
        worker.register_death()
    assert not await aiorq.is_suspended(conn)
    await aiorq.suspend(conn)
    assert rq.suspension.is_suspended(sync_conn)
    await aiorq.resume(conn)
    assert not rq.suspension.is_suspended(sync_conn)
    job = await Queue('q', connection=conn).enqueue(tasks.add, 1, 2)
    with pytest.raises(rq.exceptions.InvalidJobOperation):
        await aiorq.send_stop_job_command(conn, job.id)
    pubsub = sync_conn.pubsub()
    pubsub.subscribe('rq:pubsub:somebody')
    pubsub.get_message(timeout=1)
    await aiorq.send_shutdown_command(conn, 'somebody')
    message = pubsub.get_message(timeout=2)
    assert message and rq.command.parse_payload(message) == {'command': 'shutdown'}
    pubsub.close()
