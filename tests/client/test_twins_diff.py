"""The twins added for rq 3.0's full public API, proven against stock rq: the same Redis data read
back by rq's own API and by aiorq gives the same values, and the same calls leave the same state."""

from __future__ import annotations

import asyncio
import uuid
import warnings
from typing import Any

import pytest
import redis
import rq
import rq.command
import rq.executions
import rq.job
import rq.registry
import rq.suspension
import tasks
from diffkit import a, compare
from redis.asyncio import Redis
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.executions import Execution
from rq.job import Job as RQJob
from rq.registry import StartedJobRegistry
from rq.utils import current_timestamp
from waiting import wait_for

import aiorq
import aiorq_worker

# -- Job ------------------------------------------------------------------------------------


def job_class(lib: Any) -> Any:
    return rq.job.Job if lib is rq else aiorq.Job


def _stock_ran(conn: redis.Redis) -> None:
    """A failed and a finished job, run by rq's own worker; one job failing only in the legacy
    ``exc_info`` field (no Result), as rq < 1.12 left it."""
    q = rq.Queue('q', connection=conn)
    q.enqueue(tasks.fail, 'bad', job_id='bad', on_failure=tasks.on_failure_cb, on_stopped=tasks.on_stopped_cb)
    q.enqueue(tasks.add, 1, 2, job_id='ok', on_success=tasks.on_success_cb)
    rq.SimpleWorker([q], connection=conn, name='w').work(burst=True, logging_level='WARNING')
    legacy = q.enqueue(tasks.add, 1, 1, job_id='legacy')
    conn.hset(legacy.key, 'exc_info', rq.job.zlib.compress(b'Traceback: legacy'))


async def test_job_exc_info_callbacks_and_registries(sync_conn: redis.Redis, conn: Redis) -> None:
    _stock_ran(sync_conn)
    for job_id in ('bad', 'ok', 'legacy'):
        theirs = RQJob.fetch(job_id, connection=sync_conn)
        ours = await aiorq.Job.fetch(job_id, connection=conn)
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            want = theirs.exc_info
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            assert await ours.exc_info == want
        assert [w.category for w in caught] == [DeprecationWarning], 'deprecated as in rq 3.0'
        assert ours.success_callback is theirs.success_callback
        assert ours.failure_callback is theirs.failure_callback
        assert ours.stopped_callback is theirs.stopped_callback
        for name in ('started_job_registry', 'finished_job_registry', 'failed_job_registry'):
            rq_reg, ai_reg = getattr(theirs, name), getattr(ours, name)
            assert type(ai_reg).__name__ == type(rq_reg).__name__ and isinstance(ai_reg, aiorq.registry.BaseRegistry)
            assert (ai_reg.key, ai_reg.name, ai_reg.job_class) == (rq_reg.key, rq_reg.name, aiorq.Job)
            assert await ai_reg.get_job_ids() == rq_reg.get_job_ids()
    assert 'bad' in await (await aiorq.Job.fetch('bad', connection=conn)).failed_job_registry.get_job_ids()
    assert (await aiorq.Job.fetch('bad', connection=conn)).failure_callback is tasks.on_failure_cb
    assert (await aiorq.Job.fetch('legacy', connection=conn)).success_callback is None


async def test_job_execution_registry(sync_conn: redis.Redis, conn: Redis) -> None:
    job = rq.Queue('q', connection=sync_conn).enqueue(tasks.add, 1, 2, job_id='j')
    with sync_conn.pipeline() as pipe:
        for _ in range(3):
            Execution.create(job, 100, pipe, worker_name='w')
        pipe.execute()
    sync_conn.zadd('rq:executions:j', {'expired': current_timestamp() - 5})
    theirs = job.execution_registry
    ours = (await aiorq.Job.fetch('j', connection=conn)).execution_registry
    assert (ours.key, ours.job_id) == (theirs.key, theirs.job_id)
    assert await ours.get_execution_ids(0, 1) == theirs.get_execution_ids(0, 1)
    ids = theirs.get_execution_ids()
    assert len(ids) == 3 and await ours.get_execution_ids() == ids
    got = await ours.get_executions()
    want = theirs.get_executions()
    assert [(e.id, e.job_id, e.worker_name, e.created_at, e.last_heartbeat) for e in got] == [
        (e.id, e.job_id, e.worker_name, e.created_at, e.last_heartbeat) for e in want
    ]


async def _execution_registry_cleanup(lib: Any, conn: Any) -> Any:
    job = await a(job_class(lib).fetch('j', connection=conn))
    await a(job.execution_registry.cleanup(current_timestamp() + 1000, exception_handlers=[]))
    return None


def _executions_setup(conn: redis.Redis) -> None:
    conn.zadd('rq:executions:j', {'e1': current_timestamp() - 5, 'e2': current_timestamp() + 5000})
    rq.Queue('q', connection=conn).enqueue(tasks.add, 1, 2, job_id='j')


async def test_execution_registry_cleanup_state(rq_conn: redis.Redis, aconn: Redis, aiorq_sync: redis.Redis) -> None:
    await compare(_execution_registry_cleanup, rq_conn, aconn, aiorq_sync, setup=_executions_setup)


# -- registries -----------------------------------------------------------------------------


def _abandoned(conn: redis.Redis) -> None:
    """Executions whose deadline passed (their worker died), as in tests/protocol."""
    q = rq.Queue('q', connection=conn)
    q.enqueue(tasks.add, 1, 2, job_id='lost')
    q.enqueue(tasks.add, 1, 2, job_id='lost_retry', retry=rq.Retry(2))
    for job_id in ('lost', 'lost_retry'):
        conn.lrem('rq:queue:q', 1, job_id)
        conn.hset(RQJob.key_for(job_id), 'status', 'started')
        conn.zadd(StartedJobRegistry('q', connection=conn).key, {f'{job_id}:e{job_id}': current_timestamp() - 5})


async def test_started_cleanup_exception_handlers(
    rq_conn: redis.Redis, aconn: Redis, aiorq_sync: redis.Redis
) -> None:
    calls: dict[str, list[Any]] = {'rq': [], 'aiorq': []}

    def first(job: Any, *exc_info: Any) -> bool:
        calls['rq' if isinstance(job, RQJob) else 'aiorq'].append((job.id, exc_info[0], type(exc_info[1]), exc_info[2]))
        return False  # an explicit falsy value stops the chain, as in rq

    def never(job: Any, *exc_info: Any) -> None:
        raise AssertionError('the chain was not stopped')

    async def scenario(lib: Any, conn: Any) -> Any:
        registry = (rq.registry if lib is rq else lib).StartedJobRegistry('q', connection=conn)
        await a(registry.cleanup(exception_handlers=[first, never]))
        return None

    await compare(scenario, rq_conn, aconn, aiorq_sync, setup=_abandoned)
    assert sorted(calls['aiorq']) == sorted(calls['rq'])
    assert len(calls['rq']) == 2 and calls['rq'][0][1:] == (rq.exceptions.AbandonedJobError,) * 2 + (None,)


async def test_clean_registries_exception_handlers(
    rq_conn: redis.Redis, aconn: Redis, aiorq_sync: redis.Redis
) -> None:
    seen: list[tuple[str, str]] = []

    async def handler(job: Any, *exc_info: Any) -> None:
        seen.append((job.id, type(job).__module__))

    def sync_handler(job: Any, *exc_info: Any) -> None:
        seen.append((job.id, type(job).__module__))

    async def scenario(lib: Any, conn: Any) -> Any:
        if lib is rq:
            rq.registry.clean_registries(rq.Queue('q', connection=conn), exception_handlers=[sync_handler])
        else:
            await aiorq.clean_registries(aiorq.Queue('q', connection=conn), exception_handlers=[handler])
        return None

    await compare(scenario, rq_conn, aconn, aiorq_sync, setup=_abandoned)
    assert sorted(seen) == sorted(
        [('lost', 'rq.job'), ('lost_retry', 'rq.job'), ('lost', 'aiorq.job'), ('lost_retry', 'aiorq.job')]
    )


async def test_other_cleanups_take_exception_handlers(sync_conn: redis.Redis, conn: Redis) -> None:
    sync_conn.zadd('rq:finished:q', {'old': current_timestamp() - 5, 'new': current_timestamp() + 50})
    for name in ('FinishedJobRegistry', 'FailedJobRegistry', 'DeferredJobRegistry', 'ReadyJobRegistry',
                 'ScheduledJobRegistry', 'CanceledJobRegistry'):
        await getattr(aiorq, name)('q', connection=conn).cleanup(exception_handlers=[tasks.fail])
    assert rq.registry.FinishedJobRegistry('q', connection=sync_conn).get_job_ids(cleanup=False) == ['new']


async def test_started_registry_add_remove_requeue(sync_conn: redis.Redis, conn: Redis) -> None:
    """rq refuses add/remove (members are executions) and requeue finds no bare id: so does aiorq."""
    job = rq.Queue('q', connection=sync_conn).enqueue(tasks.add, 1, 2, job_id='j')
    with sync_conn.pipeline() as pipe:
        execution = Execution.create(job, 100, pipe, worker_name='w')
        pipe.execute()
    theirs = StartedJobRegistry('q', connection=sync_conn)
    ours = aiorq.StartedJobRegistry('q', connection=conn)
    ajob = await aiorq.Job.fetch('j', connection=conn)
    with pytest.raises(NotImplementedError):
        theirs.add(job)
    with pytest.raises(NotImplementedError, match='only a worker'):
        await ours.add(ajob)
    with pytest.raises(NotImplementedError):
        theirs.remove(job)
    with pytest.raises(NotImplementedError, match='remove_executions'):
        await ours.remove(ajob)
    with pytest.raises(InvalidJobOperation):
        theirs.requeue('j')
    with pytest.raises(InvalidJobOperation):
        await ours.requeue('j')
    assert await ours.get_job_and_execution_ids() == theirs.get_job_and_execution_ids() == [('j', execution.id)]
    await ours.remove_executions(ajob)
    assert theirs.get_job_and_execution_ids() == []


async def test_started_remove_executions_state(
    rq_conn: redis.Redis, aconn: Redis, aiorq_sync: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    def setup(conn: redis.Redis) -> None:
        # The same execution ids on both sides, so the states compare key for key.
        ids = iter(uuid.UUID(int=i) for i in range(1, 4))
        monkeypatch.setattr(rq.executions, 'uuid4', lambda: next(ids))
        job = rq.Queue('q', connection=conn).enqueue(tasks.add, 1, 2, job_id='j')
        other = rq.Queue('q', connection=conn).enqueue(tasks.add, 1, 2, job_id='other')
        with conn.pipeline() as pipe:
            for j in (job, job, other):
                Execution.create(j, 100, pipe, worker_name='w')
            pipe.execute()

    async def scenario(lib: Any, conn: Any) -> Any:
        registry = (rq.registry if lib is rq else lib).StartedJobRegistry('q', connection=conn)
        await a(registry.remove_executions(await a(job_class(lib).fetch('j', connection=conn))))
        return None

    # The execution hashes are the setup's (their float clocks differ); the indexes are compared.
    await compare(scenario, rq_conn, aconn, aiorq_sync, setup=setup, ignore=(b'rq:execution:',))
    assert aiorq_sync.zcard('rq:wip:q') == rq_conn.zcard('rq:wip:q') == 1


async def test_scheduled_get_jobs_to_enqueue(sync_conn: redis.Redis, conn: Redis) -> None:
    sync_conn.zadd('rq:scheduled:q', {'due': current_timestamp() - 5, 'later': current_timestamp() + 500})
    theirs = rq.registry.ScheduledJobRegistry('q', connection=sync_conn)
    ours = aiorq.ScheduledJobRegistry('q', connection=conn)
    assert await ours.get_jobs_to_enqueue() == theirs.get_jobs_to_enqueue() == ['due']
    at = current_timestamp() + 1000
    assert await ours.get_jobs_to_enqueue(at) == theirs.get_jobs_to_enqueue(at) == ['due', 'later']
    assert ours.key_template == theirs.key_template


# -- commands and suspension -------------------------------------------------------------------


async def test_send_stop_job_command(sync_conn: redis.Redis, conn: Redis) -> None:
    q = rq.Queue('q', connection=sync_conn, serializer='rq.serializers.JSONSerializer')
    job = q.enqueue('tasks.add', 1, 2, job_id='running')
    q.enqueue('tasks.add', 1, 2, job_id='waiting')
    job.worker_name = 'w'
    job.save()
    for exc, job_id in ((NoSuchJobError, 'missing'), (InvalidJobOperation, 'waiting')):
        with pytest.raises(exc):
            rq.command.send_stop_job_command(sync_conn, job_id, serializer='rq.serializers.JSONSerializer')
        with pytest.raises(exc):
            await aiorq.send_stop_job_command(conn, job_id, serializer='rq.serializers.JSONSerializer')
    pubsub = sync_conn.pubsub()
    pubsub.subscribe('rq:pubsub:w')
    assert pubsub.get_message(timeout=1)['type'] == 'subscribe'
    rq.command.send_stop_job_command(sync_conn, 'running', serializer='rq.serializers.JSONSerializer')
    await aiorq.send_stop_job_command(conn, 'running', serializer='rq.serializers.JSONSerializer')
    theirs, ours = pubsub.get_message(timeout=1), pubsub.get_message(timeout=1)
    pubsub.close()
    assert ours is not None and theirs is not None
    assert ours['data'] == theirs['data'] and b'stop-job' in ours['data']


async def test_is_suspended_with_a_worker_heartbeats_it(
    rq_conn: redis.Redis, aconn: Redis, aiorq_sync: redis.Redis
) -> None:
    def setup(conn: redis.Redis) -> None:
        rq.Worker(['q'], name='w', connection=conn).register_birth()
        conn.hset('rq:worker:w', 'ip_address', 'same on both')  # each connection has its own port
        conn.expire('rq:worker:w', 5)
        rq.suspension.suspend(conn)

    async def scenario(lib: Any, conn: Any) -> Any:
        if lib is rq:
            return rq.suspension.is_suspended(conn, worker=rq.Worker(['q'], name='w', connection=conn))
        worker = aiorq_worker.Worker('q', connection=conn, name='w')
        try:
            return await aiorq.is_suspended(conn, worker=worker)
        finally:
            worker.pool.shutdown()
            worker.sync_connection.close()

    theirs, ours = await compare(scenario, rq_conn, aconn, aiorq_sync, setup=setup)
    assert bool(ours) is bool(theirs) is True
    assert aiorq_sync.ttl('rq:worker:w') > 400 and rq_conn.ttl('rq:worker:w') > 400


async def test_get_current_job_takes_rq_parameters(conn: Redis) -> None:
    with pytest.warns(DeprecationWarning):
        assert aiorq.get_current_job(connection=conn) is None
    with pytest.warns(DeprecationWarning):
        assert aiorq.get_current_job(job_class=aiorq.Job) is None
    with pytest.warns(DeprecationWarning):
        assert rq.get_current_job(job_class=rq.job.Job) is None  # type: ignore[arg-type]  # rq's annotation is wrong


# -- refusals --------------------------------------------------------------------------------


def test_sync_queue_refused_in_both_spellings(conn: Redis) -> None:
    refused: list[dict[str, Any]] = [{'is_async': False}, {'async': False}]
    for kwargs in refused:
        with pytest.raises(ValueError, match='is_async=False.*Bypassing workers'):
            aiorq.Queue('q', connection=conn, **kwargs)
    accepted: dict[str, Any] = {'async': True}
    assert aiorq.Queue('q', connection=conn, **accepted).is_async


def test_rq_job_class_refused(conn: Redis) -> None:
    stock: Any = rq.job.Job
    for make in (
        lambda: aiorq.Queue('q', connection=conn, job_class=stock),
        lambda: aiorq.FailedJobRegistry('q', connection=conn, job_class=stock),
        lambda: aiorq.Worker(name='w', connection=conn, job_class=stock),
    ):
        with pytest.raises(TypeError, match='not an aiorq.Job subclass.*subclass aiorq.Job'):
            make()
    with pytest.raises(TypeError, match='subclass aiorq.Queue'):
        aiorq.Worker(name='w', connection=conn, queue_class=rq.Queue)  # type: ignore[arg-type]

    class MyJob(aiorq.Job):
        pass

    assert aiorq.Queue('q', connection=conn, job_class=MyJob).job_class is MyJob


# -- worker discovery -------------------------------------------------------------------------


def rq_view(w: Any) -> dict[str, Any]:
    """What rq's API reads of a registered worker."""
    return {
        'name': w.name,
        'key': w.key,
        'channel': w.pubsub_channel_name,
        'hostname': w.hostname,
        'ip_address': w.ip_address,
        'pid': w.pid,
        'version': w.version,
        'python_version': w.python_version,
        'queues': w.queue_names(),
        'queue_keys': w.queue_keys(),
        'state': w.get_state(),
        'birth': w.birth_date,
        'heartbeat': w.last_heartbeat,
        'successful': w.successful_job_count,
        'failed': w.failed_job_count,
        'working_time': w.total_working_time,
        'death': w.death_date,
        'shutdown_requested': w.shutdown_requested_date,
        'execution_count': w.current_execution_count,
        'executions': sorted(e.composite_key for e in w.get_current_executions(refresh=True)),
        'job_id': w.get_current_job_id(),
    }


async def aiorq_view(w: aiorq.Worker) -> dict[str, Any]:
    return {
        'name': w.name,
        'key': w.key,
        'channel': w.pubsub_channel_name,
        'hostname': w.hostname,
        'ip_address': w.ip_address,
        'pid': w.pid,
        'version': w.version,
        'python_version': w.python_version,
        'queues': w.queue_names(),
        'queue_keys': w.queue_keys(),
        'state': w.get_state(),
        'birth': w.birth_date,
        'heartbeat': w.last_heartbeat,
        'successful': w.successful_job_count,
        'failed': w.failed_job_count,
        'working_time': w.total_working_time,
        'death': await w.death_date,
        'shutdown_requested': await w.shutdown_requested_date,
        'execution_count': await w.current_execution_count,
        'executions': sorted(e.composite_key for e in await w.get_current_executions(refresh=True)),
        'job_id': await w.get_current_job_id(),
    }


def assert_same_view(ours: dict[str, Any], theirs: dict[str, Any]) -> None:
    differ = {k: (ours[k], theirs[k]) for k in theirs if ours[k] != theirs[k]}
    assert not differ, f'aiorq.Worker (left) and rq.Worker (right) read differently: {differ}'


async def assert_same_workers(sync_conn: redis.Redis, conn: Redis, queue: str | None = None) -> list[str]:
    rq_queue = rq.Queue(queue, connection=sync_conn) if queue else None
    ai_queue = aiorq.Queue(queue, connection=conn) if queue else None
    theirs = sorted(rq.Worker.all(connection=sync_conn, queue=rq_queue), key=lambda w: w.name)
    ours = await aiorq.Worker.all(connection=conn, queue=ai_queue)
    assert [w.name for w in ours] == [w.name for w in theirs]
    for mine, stock in zip(ours, theirs):
        assert_same_view(await aiorq_view(mine), rq_view(stock))
    assert await aiorq.Worker.count(connection=conn, queue=ai_queue) == rq.Worker.count(sync_conn, rq_queue)
    assert await aiorq.Worker.all_keys(connection=conn, queue=ai_queue) == sorted(
        rq.Worker.all_keys(sync_conn, rq_queue)
    )
    return [w.name for w in ours]


async def test_worker_discovery_of_a_stock_worker(sync_conn: redis.Redis, conn: Redis) -> None:
    stock = rq.Worker(['q', 'q2'], name='stock', connection=sync_conn)
    stock.register_birth()
    job = rq.Queue('q', connection=sync_conn).enqueue(tasks.add, 1, 2, job_id='j')
    with sync_conn.pipeline() as pipe:
        execution = Execution.create(job, 100, pipe, worker_name='stock')
        stock.set_state('busy', pipeline=pipe)
        stock.increment_successful_job_count(pipeline=pipe)
        stock.increment_failed_job_count(pipeline=pipe)
        stock.heartbeat(pipeline=pipe)
        pipe.execute()
    sync_conn.hset(stock.key, 'shutdown_requested_date', '2030-01-01T00:00:00.000000Z')
    rq.Worker(['other'], name='idle', connection=sync_conn).register_birth()

    assert await assert_same_workers(sync_conn, conn) == ['idle', 'stock']
    assert await assert_same_workers(sync_conn, conn, 'q2') == ['stock']
    assert await assert_same_workers(sync_conn, conn, 'none') == []

    found = await aiorq.Worker.find_by_key('rq:worker:stock', connection=conn)
    assert found is not None and await found.get_current_job_id() == 'j'
    current = await found.get_current_job()
    assert isinstance(current, aiorq.Job) and current.id == 'j'
    assert (await found.execution).id == execution.id  # type: ignore[union-attr]
    assert [q.name for q in found.queues] == ['q', 'q2'] and all(isinstance(q, aiorq.Queue) for q in found.queues)

    # An execution whose hash expired is dropped from the worker's index, by both.
    sync_conn.delete(execution.key)
    assert await found.get_current_executions() != [], 'cached, as rq caches it'
    assert await found.get_current_executions(refresh=True) == []
    assert sync_conn.scard('rq:worker:stock:executions') == 0
    await found.refresh()
    assert found.get_state() == found.state == 'busy'


async def test_find_by_key_bad_and_expired_keys(rq_conn: redis.Redis, aconn: Redis, aiorq_sync: redis.Redis) -> None:
    with pytest.raises(ValueError, match='Not a valid RQ worker key'):
        rq.Worker.find_by_key('nope', connection=rq_conn)
    with pytest.raises(ValueError, match='Not a valid RQ worker key'):
        await aiorq.Worker.find_by_key('nope', connection=aconn)

    def setup(conn: redis.Redis) -> None:
        rq.Worker(['q'], name='gone', connection=conn).register_birth()
        rq.Worker(['q'], name='here', connection=conn).register_birth()
        conn.delete('rq:worker:gone')

    async def scenario(lib: Any, conn: Any) -> Any:
        worker_cls = rq.Worker if lib is rq else aiorq.Worker
        gone = await a(worker_cls.find_by_key('rq:worker:gone', connection=conn))
        here = await a(worker_cls.find_by_key('rq:worker:here', connection=conn))
        return gone, here.name

    theirs, ours = await compare(scenario, rq_conn, aconn, aiorq_sync, setup=setup, ignore=(b'rq:worker:here',))
    assert theirs == ours == (None, 'here')


async def test_worker_discovery_of_a_running_aiorq_worker(sync_conn: redis.Redis, conn: Redis) -> None:
    q = aiorq.Queue('q', connection=conn)
    job = await q.enqueue(tasks.progress_then_wait)
    await q.enqueue(tasks.fail, 'planned')
    worker = aiorq_worker.Worker('q', connection=conn, name='mine')
    task = asyncio.ensure_future(worker.work(burst=True))
    try:
        # Compare once the failing job is recorded and only the waiting one runs: a still state.
        await wait_for(lambda: sync_conn.hget('rq:worker:mine', 'failed_job_count') == b'1')
        await wait_for(lambda: sync_conn.scard('rq:worker:mine:executions') == 1)
        assert await assert_same_workers(sync_conn, conn) == ['mine']
        ours = await aiorq.Worker.find_by_key('rq:worker:mine', connection=conn)
        assert ours is not None and ours.get_state() == 'busy' and await ours.get_current_job_id() == job.id
    finally:
        await conn.rpush('go', 1)
        await asyncio.wait_for(task, 10)
    # After its death the hash lingers (with ``death``) but the worker is no longer listed.
    theirs = rq.Worker.find_by_key('rq:worker:mine', connection=sync_conn)
    ours = await aiorq.Worker.find_by_key('rq:worker:mine', connection=conn)
    assert ours is not None and theirs is not None
    assert_same_view(await aiorq_view(ours), rq_view(theirs))
    assert (ours.successful_job_count, ours.failed_job_count) == (1, 1)
    assert await ours.death_date is not None
    assert await aiorq.Worker.all(connection=conn) == [] == rq.Worker.all(connection=sync_conn)
