"""The dashboard's actions against stock rq's own API: each case runs rq's call on one database
and the dashboard's POST on another, from the same starting state; the Redis states must match."""

from __future__ import annotations

from typing import Any

import pytest
import redis
import rq
import rq.suspension
import tasks
from diffkit import compare
from redis.asyncio import Redis
from rq.group import Group
from rq.job import Job as RQJob
from rq.registry import CanceledJobRegistry, FailedJobRegistry
from rq.serializers import DefaultSerializer
from webkit import act, client

from aiorq.protocol import actions

# What the stock worker of the setup leaves that differs per run (its own record, its locks).
WORKER_KEYS = (b'rq:worker', b'rq:workers', b'rq:clean_registries')


def run_stock_worker(conn: redis.Redis, queue: str = 'q') -> None:
    worker = rq.SimpleWorker([rq.Queue(queue, connection=conn)], connection=conn, name='w')
    worker.work(burst=True, logging_level='CRITICAL')


def setup_ran(conn: redis.Redis) -> None:
    q = rq.Queue('q', connection=conn)
    q.enqueue(tasks.add, 1, 2, job_id='ok', meta={'progress': 1})
    q.enqueue(tasks.fail, 'bad', job_id='bad', meta={'note': 'pickled'})
    q.enqueue(tasks.fail, 'bad', job_id='bad2', failure_ttl=1000)
    q.enqueue(tasks.add, 2, 3, job_id='child', depends_on='bad2')
    run_stock_worker(conn)
    q.enqueue(tasks.add, 5, 5, job_id='waiting')
    q.enqueue(tasks.add, 6, 6, job_id='waiting2', ttl=600)
    q.enqueue(tasks.add, 6, 7, job_id='nixed')
    rq.cancel_job('nixed', connection=conn)


def setup_many_failed(conn: redis.Redis) -> None:
    """Failed jobs of every shape a bulk action meets: plain, stopped, with meta, with rq's
    legacy ``result`` field, in a group, plus a member whose job hash has expired."""
    q = rq.Queue('q', connection=conn)
    for i in range(17):
        q.enqueue(tasks.fail, f'bad {i}', job_id=f'f{i:02d}', meta={'i': i} if i % 3 else None)
    Group(conn, name='grp').enqueue_many(
        q, [q.prepare_data(tasks.fail, ('in group',), job_id=f'g{i}') for i in range(3)]
    )
    run_stock_worker(conn)
    # As rq's worker writes it (a returned Retry): where rq's requeue loads and dumps it again, the
    # dashboard leaves the field untouched, which is the same bytes for what rq itself wrote.
    conn.hset(RQJob.key_for('f03'), 'result', DefaultSerializer.dumps(3))
    conn.hset(RQJob.key_for('f04'), 'status', 'stopped')
    conn.zadd('rq:failed:q', {'expired-hash': 1_900_000_000})
    q.enqueue(tasks.add, 1, 1, job_id='queued')


async def dashboard(conn: Redis, action: str, **fields: str) -> str:
    async with client(conn) as c:
        kind, message = await act(c, action, **fields)
    assert kind == 'ok', message
    return message


CASES: dict[str, tuple[Any, Any, Any]] = {
    'requeue failed': (
        setup_ran,
        lambda conn: rq.requeue_job('bad', connection=conn),
        lambda conn: dashboard(conn, 'requeue', job_id='bad'),
    ),
    'requeue canceled': (
        setup_ran,
        lambda conn: CanceledJobRegistry('q', connection=conn).requeue('nixed'),
        lambda conn: dashboard(conn, 'requeue', job_id='nixed'),
    ),
    'cancel queued': (
        setup_ran,
        lambda conn: rq.cancel_job('waiting2', connection=conn),
        lambda conn: dashboard(conn, 'cancel', job_id='waiting2'),
    ),
    'cancel failed': (
        setup_ran,
        lambda conn: rq.cancel_job('bad2', connection=conn),
        lambda conn: dashboard(conn, 'cancel', job_id='bad2'),
    ),
    'delete finished': (
        setup_ran,
        lambda conn: RQJob.fetch('ok', connection=conn).delete(),
        lambda conn: dashboard(conn, 'delete', job_id='ok'),
    ),
    'delete failed with a dependent': (
        setup_ran,
        lambda conn: RQJob.fetch('bad2', connection=conn).delete(),
        lambda conn: dashboard(conn, 'delete', job_id='bad2'),
    ),
    'delete deferred': (
        setup_ran,
        lambda conn: RQJob.fetch('child', connection=conn).delete(),
        lambda conn: dashboard(conn, 'delete', job_id='child'),
    ),
    'empty queue': (
        setup_ran,
        lambda conn: rq.Queue('q', connection=conn).empty(),
        lambda conn: dashboard(conn, 'empty', queue='q'),
    ),
    'suspend': (
        setup_ran,
        lambda conn: rq.suspension.suspend(conn),
        lambda conn: dashboard(conn, 'suspend'),
    ),
}


def rq_requeue_all(conn: redis.Redis) -> None:
    """What a loop over rq's API does: every id, oldest first; a job whose hash is gone raises."""
    registry = FailedJobRegistry('q', connection=conn)
    for job_id in registry.get_job_ids(cleanup=False):
        try:
            registry.requeue(job_id)
        except rq.exceptions.NoSuchJobError:
            pass


def rq_delete_all(conn: redis.Redis) -> None:
    registry = FailedJobRegistry('q', connection=conn)
    for job_id in registry.get_job_ids(cleanup=False):
        try:
            RQJob.fetch(job_id, connection=conn).delete()
        except rq.exceptions.NoSuchJobError:
            pass


@pytest.mark.parametrize('name', sorted(CASES))
async def test_action_as_rq(name: str, rq_conn: redis.Redis, aconn: Redis, aiorq_sync: redis.Redis) -> None:
    setup, with_rq, with_dashboard = CASES[name]

    async def scenario(lib: Any, conn: Any) -> None:
        if lib is rq:
            with_rq(conn)
        else:
            await with_dashboard(conn)

    await compare(scenario, rq_conn, aconn, aiorq_sync, setup=setup, ignore=WORKER_KEYS)


@pytest.mark.parametrize('bulk', ['requeue-all', 'delete-all'])
async def test_bulk_action_as_rq_loop(
    bulk: str, monkeypatch: pytest.MonkeyPatch, rq_conn: redis.Redis, aconn: Redis, aiorq_sync: redis.Redis
) -> None:
    """In batches (of 4 here, so that several run), the bulk actions leave what rq's own call on
    each job leaves, and say how many they did."""
    monkeypatch.setattr(actions, 'BATCH', 4)
    messages: list[str] = []

    async def scenario(lib: Any, conn: Any) -> None:
        if lib is rq:
            (rq_requeue_all if bulk == 'requeue-all' else rq_delete_all)(conn)
        else:
            messages.append(await dashboard(conn, bulk, queue='q', registry='failed'))

    await compare(scenario, rq_conn, aconn, aiorq_sync, setup=setup_many_failed, ignore=WORKER_KEYS)
    verb = 'Requeued' if bulk == 'requeue-all' else 'Deleted'
    assert messages == [f'{verb} 20 jobs of q/failed; 1 skipped (gone, or moved by someone else)']
