"""Cancel, delete, requeue, empty, remove, compact, meta and registry cleanup: rq vs aiorq."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest
import redis
import rq
import rq.registry
import tasks
from diffkit import a, compare
from rq.exceptions import InvalidJobOperation
from rq.group import Group
from rq.job import Job as RQJob
from rq.registry import StartedJobRegistry
from rq.utils import current_timestamp

# State the stock worker leaves that legitimately differs per run (its own record, locks).
WORKER_KEYS = (b'rq:worker', b'rq:workers', b'rq:clean_registries')


def run_stock_worker(conn: redis.Redis, queue: str = 'q') -> None:
    """Drain ``queue`` with rq's in-process SimpleWorker (burst) under a fixed name."""
    worker = rq.SimpleWorker([rq.Queue(queue, connection=conn)], connection=conn, name='w')
    worker.work(burst=True, logging_level='WARNING')


def setup_ran(conn: redis.Redis) -> None:
    q = rq.Queue('q', connection=conn)
    q.enqueue(tasks.add, 1, 2, job_id='ok')
    q.enqueue(tasks.fail, 'bad', job_id='bad')
    q.enqueue(tasks.fail, 'bad', job_id='bad2', failure_ttl=1000)
    q.enqueue(tasks.add, 2, 3, job_id='child', depends_on='bad2')
    run_stock_worker(conn)
    q.enqueue(tasks.add, 5, 5, job_id='waiting')


def setup_chain(conn: redis.Redis) -> None:
    q = rq.Queue('q', connection=conn)
    q.enqueue(tasks.add, 1, 2, job_id='parent')
    q.enqueue(tasks.add, 1, 2, job_id='other')
    q.enqueue(tasks.add, 3, 4, job_id='child', depends_on='parent')
    q.enqueue(tasks.add, 3, 4, job_id='child2', depends_on=['parent', 'other'])
    q2 = rq.Queue('q2', connection=conn)
    q2.enqueue(tasks.add, 3, 4, job_id='elsewhere', depends_on='parent')
    q.enqueue_at(datetime(2030, 1, 1, tzinfo=timezone.utc), tasks.add, 1, 1, job_id='sched')


def setup_abandoned(conn: redis.Redis) -> None:
    """Two jobs whose executions' deadlines have passed (the worker died), one with retries."""
    q = rq.Queue('q', connection=conn)
    q.enqueue(tasks.add, 1, 2, job_id='lost', on_failure=tasks.on_failure_cb)
    q.enqueue(tasks.add, 1, 2, job_id='lost_retry', retry=rq.Retry(2, interval=[0, 5]))
    q.enqueue(tasks.add, 1, 2, job_id='lost_retry_later', retry=rq.Retry(1, interval=30))
    q.enqueue(tasks.add, 5, 6, job_id='dependent', depends_on='lost')
    q.enqueue(tasks.add, 1, 2, job_id='finished_late')
    for job_id in ('lost', 'lost_retry', 'lost_retry_later', 'finished_late'):
        conn.lrem('rq:queue:q', 1, job_id)
        conn.hset(RQJob.key_for(job_id), 'status', 'started')
        conn.zadd(StartedJobRegistry('q', connection=conn).key, {f'{job_id}:e{job_id}': current_timestamp() - 5})
    conn.hset(RQJob.key_for('finished_late'), 'status', 'finished')
    conn.zadd('rq:finished:q', {'expired': current_timestamp() - 10, 'fresh': current_timestamp() + 100})
    conn.zadd('rq:failed:q', {'expired': current_timestamp() - 10})


CASES: dict[str, tuple[Any, Any]] = {}


def case(setup: Any) -> Any:
    def register(fn: Any) -> Any:
        CASES[fn.__name__] = (setup, fn)
        return fn

    return register


def reg(lib: Any, name: str) -> Any:
    return getattr(rq.registry if lib is rq else lib, name)


def job_cls(lib: Any) -> Any:
    return RQJob if lib is rq else lib.Job


@case(setup_ran)
async def cancel_queued(lib: Any, conn: Any) -> Any:
    return await a(lib.cancel_job('waiting', connection=conn))


@case(setup_ran)
async def cancel_finished(lib: Any, conn: Any) -> Any:
    job = await a(job_cls(lib).fetch('ok', connection=conn))
    await a(job.cancel())
    with pytest.raises(InvalidJobOperation):
        await a(job.cancel())


@case(setup_ran)
async def cancel_failed(lib: Any, conn: Any) -> Any:
    job = await a(job_cls(lib).fetch('bad2', connection=conn))
    return await a(job.cancel(enqueue_dependents=True))


@case(setup_chain)
async def cancel_deferred_remove_from_dependencies(lib: Any, conn: Any) -> Any:
    job = await a(job_cls(lib).fetch('child2', connection=conn))
    return await a(job.cancel(remove_from_dependencies=True))


@case(setup_chain)
async def cancel_enqueue_dependents(lib: Any, conn: Any) -> Any:
    job = await a(job_cls(lib).fetch('parent', connection=conn))
    return await a(job.cancel(enqueue_dependents=True))


@case(setup_chain)
async def cancel_scheduled(lib: Any, conn: Any) -> Any:
    return await a(lib.cancel_job('sched', connection=conn))


@case(setup_ran)
async def delete_finished(lib: Any, conn: Any) -> Any:
    job = await a(job_cls(lib).fetch('ok', connection=conn))
    await a(job.delete())


@case(setup_ran)
async def delete_failed_keep_in_queue(lib: Any, conn: Any) -> Any:
    job = await a(job_cls(lib).fetch('bad', connection=conn))
    await a(job.delete(remove_from_queue=False))


@case(setup_chain)
async def delete_with_dependents(lib: Any, conn: Any) -> Any:
    job = await a(job_cls(lib).fetch('parent', connection=conn))
    await a(job.delete(delete_dependents=True))


@case(setup_chain)
async def delete_deferred(lib: Any, conn: Any) -> Any:
    job = await a(job_cls(lib).fetch('child', connection=conn))
    await a(job.delete())


def setup_group(conn: redis.Redis) -> None:
    q = rq.Queue('q', connection=conn)
    Group(conn, name='g').enqueue_many(
        q, [q.prepare_data(tasks.add, (1, 2), job_id='g1'), q.prepare_data(tasks.add, (3, 4), job_id='g2')]
    )


@case(setup_group)
async def delete_group_member(lib: Any, conn: Any) -> Any:
    job = await a(job_cls(lib).fetch('g1', connection=conn))
    await a(job.delete())


@case(setup_ran)
async def requeue_job_function(lib: Any, conn: Any) -> Any:
    return await a(lib.requeue_job('bad', connection=conn))


@case(setup_ran)
async def requeue_from_registry_at_front(lib: Any, conn: Any) -> Any:
    registry = reg(lib, 'FailedJobRegistry')('q', connection=conn)
    job = await a(registry.requeue('bad2', at_front=True))
    with pytest.raises(InvalidJobOperation):
        await a(registry.requeue('bad2'))
    return job


@case(setup_ran)
async def job_requeue(lib: Any, conn: Any) -> Any:
    job = await a(job_cls(lib).fetch('bad', connection=conn))
    return await a(job.requeue())


@case(setup_ran)
async def save_meta(lib: Any, conn: Any) -> Any:
    job = await a(job_cls(lib).fetch('waiting', connection=conn))
    job.meta['progress'] = 50
    await a(job.save_meta())


@case(setup_chain)
async def queue_empty(lib: Any, conn: Any) -> Any:
    q = lib.Queue('q', connection=conn)
    assert await a(q.empty()) == 2


@case(setup_chain)
async def queue_delete(lib: Any, conn: Any) -> Any:
    await a(lib.Queue('q', connection=conn).delete(delete_jobs=True))


@case(setup_chain)
async def queue_remove_and_compact(lib: Any, conn: Any) -> Any:
    q = lib.Queue('q', connection=conn)
    await a(q.remove('parent'))
    await a(conn.rpush('rq:queue:q', 'ghost', 'other', 'ghost2'))
    await a(q.compact())


@case(setup_chain)
async def fetch_job_drops_missing_ids(lib: Any, conn: Any) -> Any:
    q = lib.Queue('q', connection=conn)
    await a(conn.rpush('rq:queue:q', 'ghost'))
    assert await a(q.fetch_job('ghost')) is None
    assert (await a(q.fetch_job('other'))).id == 'other'
    assert await a(lib.Queue('q2', connection=conn).fetch_job('other')) is None


@case(setup_abandoned)
async def started_registry_cleanup(lib: Any, conn: Any) -> Any:
    registry = reg(lib, 'StartedJobRegistry')('q', connection=conn)
    count = registry.count
    assert await a(count) == 0


@case(setup_abandoned)
async def clean_registries(lib: Any, conn: Any) -> Any:
    q = lib.Queue('q', connection=conn)
    if lib is rq:
        rq.registry.clean_registries(q)
    else:
        await lib.clean_registries(q)


@case(setup_abandoned)
async def finished_registry_ids(lib: Any, conn: Any) -> Any:
    registry = reg(lib, 'FinishedJobRegistry')('q', connection=conn)
    assert await a(registry.get_job_ids()) == ['fresh']


@case(setup_chain)
async def push_pop_and_maintenance_lock(lib: Any, conn: Any) -> Any:
    q = lib.Queue('q', connection=conn)
    await a(q.push_job_id('pushed'))
    await a(q.push_job_id('front', at_front=True))
    assert await a(q.pop_job_id()) == 'front'
    assert await a(q.acquire_maintenance_lock())
    assert not await a(q.acquire_maintenance_lock())
    await a(q.release_maintenance_lock())
    assert await a(q.acquire_maintenance_lock())
    assert await a(q.scheduler_pid) is None


@pytest.mark.parametrize('name', sorted(CASES))
async def test_same_state(name: str, rq_conn: Any, aconn: Any, aiorq_sync: Any) -> None:
    setup, scenario = CASES[name]
    await compare(scenario, rq_conn, aconn, aiorq_sync, setup=setup, ignore=WORKER_KEYS)
