"""``Group`` and ``Result``: stock rq and aiorq do the same to Redis, and read back the same values."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import datetime
from typing import Any

import pytest
import redis
import rq
import rq.group
import rq.registry
import rq.results
import tasks
from conftest import AIORQ_DB, RQ_DB
from diffkit import a, compare
from redis.asyncio import Redis
from redis.exceptions import ResponseError
from rq.exceptions import NoSuchGroupError
from rq.job import Job as RQJob
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer
from rq.utils import current_timestamp

import aiorq
import aiorq.protocol

# State a stock worker leaves that legitimately differs per run (its own record, locks).
WORKER_KEYS = (b'rq:worker', b'rq:workers', b'rq:clean_registries')

CASES: dict[str, tuple[Any, Any]] = {}


def case(setup: Any = None) -> Any:
    def register(fn: Any) -> Any:
        CASES[fn.__name__] = (setup, fn)
        return fn

    return register


def group_cls(lib: Any) -> Any:
    return rq.group.Group if lib is rq else lib.Group


def job_cls(lib: Any) -> Any:
    return RQJob if lib is rq else lib.Job


def result_cls(lib: Any) -> Any:
    return rq.results.Result if lib is rq else lib.Result


def run_stock_worker(conn: redis.Redis, queue: str = 'q', serializer: Any = None) -> None:
    """Drain ``queue`` with rq's in-process SimpleWorker (burst) under a fixed name."""
    queues = [rq.Queue(queue, connection=conn, serializer=serializer)]
    worker = rq.SimpleWorker(queues, connection=conn, name='w', serializer=serializer)
    worker.work(burst=True, logging_level='WARNING')


# -- groups ------------------------------------------------------------------------------------


def setup_parents(conn: redis.Redis) -> None:
    q = rq.Queue('q', connection=conn)
    q.enqueue(tasks.add, 0, 0, job_id='parent')
    q.enqueue(tasks.add, 0, 0, job_id='done')
    conn.hset(RQJob.key_for('done'), 'status', 'finished')


def mixed_datas(q: Any) -> list[Any]:
    """Plain, at-front and dependent items, with dependencies inside the batch and outside it."""
    return [
        q.prepare_data(tasks.add, (1, 2), job_id='m1', timeout=20),
        q.prepare_data(tasks.add, (3, 4), job_id='m2', at_front=True, meta={'x': 1}),
        # rq checks the first dependent before the batch is written: m1 looks missing, so met.
        q.prepare_data(tasks.add, (5, 6), job_id='d1', depends_on='m1'),
        q.prepare_data(tasks.add, (7, 8), job_id='d2', depends_on='parent', ttl=40),
        # Later dependents see the batch: m1 is queued, so unmet.
        q.prepare_data(tasks.add, (9, 9), job_id='d3', depends_on='m1'),
        q.prepare_data(tasks.add, (1, 1), job_id='d4', depends_on='done', at_front=True),
    ]


@case(setup_parents)
async def group_enqueue_many(lib: Any, conn: Any) -> Any:
    q = lib.Queue('q', connection=conn)
    group = group_cls(lib)(conn, name='g')
    assert (group.name, group.key, repr(group)) == ('g', 'rq:group:g', 'Group(id=g)')
    jobs = await a(group.enqueue_many(q, mixed_datas(q)))
    assert [j.id for j in jobs] == ['m1', 'm2', 'd2', 'd3', 'd1', 'd4']
    assert all(j.group_id == 'g' for j in jobs)
    return jobs


@case(setup_parents)
async def group_enqueue_many_caller_pipeline(lib: Any, conn: Any) -> Any:
    q = lib.Queue('q', connection=conn)
    group = group_cls(lib).create(connection=conn, name='g')
    pipe = conn.pipeline()
    pipe.set('marker', 'caller')
    jobs = await a(group.enqueue_many(q, mixed_datas(q), pipeline=pipe))
    # rq executes the caller's pipeline itself, with what it held before.
    assert await a(conn.get('marker')) == b'caller'
    assert sorted(await a(conn.smembers('rq:group:g'))) == [b'd1', b'd2', b'd3', b'd4', b'm1', b'm2']
    return jobs


@case(setup_parents)
async def group_enqueue_many_plain_in_one_multi(lib: Any, conn: Any) -> Any:
    q = lib.Queue('q', connection=conn)
    datas = [q.prepare_data(tasks.add, (i, i), job_id=f'p{i}', result_ttl=10) for i in range(3)]
    return await a(group_cls(lib)(conn, name='g').enqueue_many(q, datas))


@case(setup_parents)
async def queue_enqueue_many_caller_pipeline(lib: Any, conn: Any) -> Any:
    # The same flush, without a group: rq sends the caller's pipeline after the first dependent's check.
    q = lib.Queue('q', connection=conn)
    pipe = conn.pipeline()
    pipe.set('marker', 'caller')
    jobs = await a(q.enqueue_many(mixed_datas(q), pipeline=pipe))
    assert await a(conn.get('marker')) == b'caller'
    await a(pipe.execute())
    return jobs


def setup_group(conn: redis.Redis) -> None:
    q = rq.Queue('q', connection=conn)
    rq.group.Group(conn, name='g').enqueue_many(
        q, [q.prepare_data(tasks.add, (i, i), job_id=f'g{i}') for i in range(1, 5)]
    )
    rq.group.Group(conn, name='h').enqueue_many(q, [q.prepare_data(tasks.add, (0, 0), job_id='h1')])


def setup_group_with_expired_members(conn: redis.Redis) -> None:
    setup_group(conn)
    conn.delete(RQJob.key_for('g1'))
    conn.pexpire(RQJob.key_for('g2'), 1)
    # Group 'h' loses its only member; 'gone' is a name whose set vanished; 'ghost' never had one.
    conn.delete(RQJob.key_for('h1'))
    rq.group.Group(conn, name='gone').enqueue_many(
        rq.Queue('q', connection=conn), [rq.Queue.prepare_data(tasks.add, (0, 0), job_id='x1')]
    )
    conn.delete(rq.group.Group.get_key('gone'))
    conn.sadd('rq:groups', 'ghost')
    time.sleep(0.01)  # let the 1 ms TTL of g2 pass


@case(setup_group)
async def group_delete_job(lib: Any, conn: Any) -> Any:
    group = await a(group_cls(lib).fetch('g', connection=conn))
    await a(group.delete_job('g1'))
    pipe = conn.pipeline()
    await a(group.delete_job('g2', pipeline=pipe))
    assert await a(conn.sismember('rq:group:g', 'g2'))
    await a(pipe.execute())
    assert sorted(j.id for j in await a(group.get_jobs())) == ['g3', 'g4']


@case(setup_group_with_expired_members)
async def group_cleanup_and_get_jobs(lib: Any, conn: Any) -> Any:
    group = await a(group_cls(lib).fetch('g', connection=conn))
    await a(group.cleanup())
    assert sorted(await a(conn.smembers('rq:group:g'))) == [b'g3', b'g4']
    jobs = await a(group.get_jobs())
    assert all(isinstance(j, job_cls(lib)) for j in jobs)
    assert sorted(j.id for j in jobs) == ['g3', 'g4']
    # get_jobs cleans first: a member deleted since is neither returned nor kept.
    await a(conn.delete(RQJob.key_for('g3')))
    assert [j.id for j in await a(group.get_jobs())] == ['g4']
    # 'h' lost its only member: after cleanup its set is gone, so it cannot be fetched any more.
    h = group_cls(lib)(conn, name='h')
    assert [j.id for j in await a(h.get_jobs())] == []
    with pytest.raises(NoSuchGroupError):
        await a(group_cls(lib).fetch('h', connection=conn))


@case(setup_group_with_expired_members)
async def group_all_drops_vanished(lib: Any, conn: Any) -> Any:
    groups = await a(group_cls(lib).all(connection=conn))
    assert sorted(g.name for g in groups) == ['g', 'h']
    assert all(isinstance(g, group_cls(lib)) and g.connection is conn for g in groups)
    # Members are not touched by all(): g1 and g2 stay until a cleanup.
    assert await a(conn.scard('rq:group:g')) == 4


@case(setup_group_with_expired_members)
async def group_fetch_missing(lib: Any, conn: Any) -> Any:
    for name in ('nope', 'gone', 'ghost'):
        with pytest.raises(NoSuchGroupError):
            await a(group_cls(lib).fetch(name, connection=conn))
    group = await a(group_cls(lib).fetch('g', connection=conn))
    assert (group.name, group.key, group_cls(lib).get_key('g')) == ('g', 'rq:group:g', 'rq:group:g')


@case(setup_group_with_expired_members)
async def group_maintenance(lib: Any, conn: Any) -> Any:
    cls = group_cls(lib)
    assert await a(cls.acquire_maintenance_lock(conn, 100))
    assert not await a(cls.acquire_maintenance_lock(conn, 100))
    await a(cls.clean_registries(conn))


@case(setup_group_with_expired_members)
async def worker_group_maintenance(lib: Any, conn: Any) -> Any:
    # rq's Worker.clean_group_registries with the default 600 s interval, and the aiorq worker's call.
    ran = []
    for _ in range(2):
        if lib is rq:
            locked = rq.group.Group.acquire_maintenance_lock(conn, 599)
            if locked:
                rq.group.Group.clean_registries(conn)
            ran.append(locked)
        else:
            ran.append(await aiorq.protocol.maintenance.clean_groups(conn, 600))
    assert ran == [True, False]


@case(setup_group)
async def group_enqueue_nothing(lib: Any, conn: Any) -> Any:
    q = lib.Queue('q', connection=conn)
    with pytest.raises(ResponseError):
        await a(group_cls(lib)(conn, name='empty').enqueue_many(q, []))


# -- results: deleting, through the objects of each library -------------------------------------


def setup_ran(conn: redis.Redis) -> None:
    q = rq.Queue('q', connection=conn)
    q.enqueue(tasks.add, 1, 2, job_id='ok')
    q.enqueue(tasks.fail, 'bad', job_id='bad')
    q.enqueue(tasks.returns_retry, job_id='retried')
    run_stock_worker(conn)


@case(setup_ran)
async def result_delete_all(lib: Any, conn: Any) -> Any:
    for job_id, count in (('bad', 1), ('retried', 2)):
        job = await a(job_cls(lib).fetch(job_id, connection=conn))
        assert await a(result_cls(lib).count(job)) == count
        await a(result_cls(lib).delete_all(job))
        assert await a(result_cls(lib).count(job)) == 0
        assert await a(result_cls(lib).fetch_latest(job)) is None


@pytest.mark.parametrize('name', sorted(CASES))
async def test_same_state(name: str, rq_conn: Any, aconn: Any, aiorq_sync: Any) -> None:
    setup, scenario = CASES[name]
    rq_result, aiorq_result = await compare(scenario, rq_conn, aconn, aiorq_sync, setup=setup, ignore=WORKER_KEYS)
    if isinstance(rq_result, list):
        assert [j.id for j in rq_result] == [j.id for j in aiorq_result]
        assert all(isinstance(j, aiorq.Job) for j in aiorq_result)


async def test_group_default_name(aconn: Redis, aiorq_sync: redis.Redis) -> None:
    first, second = aiorq.Group(aconn), aiorq.Group.create(connection=aconn)
    stock = rq.group.Group(aiorq_sync)
    assert len(first.name) == len(stock.name) == 32 and int(first.name, 16) >= 0
    assert first.name != second.name and first.key == aiorq.Group.get_key(first.name) == stock.get_key(first.name)
    for attr in ('REDIS_GROUP_NAME_PREFIX', 'REDIS_GROUP_KEY', 'REDIS_GROUP_CLEANING_KEY'):
        assert getattr(aiorq.Group, attr) == getattr(rq.group.Group, attr)


class Monitor:
    """Redis ``MONITOR`` in a thread: the commands each database received, until :meth:`stop`."""

    SENTINEL = 'ECHO monitor-stop'

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.commands: list[tuple[int, str]] = []
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._listen, daemon=True)
        self.thread.start()
        assert self.ready.wait(5)

    def _listen(self) -> None:
        with self.client.monitor() as monitor:
            self.ready.set()
            for entry in monitor.listen():
                if entry['command'] == self.SENTINEL:
                    return
                self.commands.append((int(entry['db']), entry['command']))

    def stop(self) -> None:
        self.client.echo('monitor-stop')
        self.thread.join(5)
        self.client.close()

    def transactions(self, db: int) -> list[list[str]]:
        """The MULTI … EXEC blocks sent to ``db``; a full-mapping HSET is shown without its values."""
        blocks: list[list[str]] = []
        current: list[str] | None = None
        for where, command in self.commands:
            if where != db:
                continue
            if command == 'MULTI':
                current = []
            elif command == 'EXEC' and current is not None:
                blocks.append(current)
                current = None
            elif current is not None:
                words = command.split()
                current.append(
                    ' '.join(words[:2] + ['<mapping>']) if words[0] == 'HSET' and len(words) > 4 else command
                )
        return blocks


async def test_group_enqueue_many_is_one_multi_like_rq(
    redis_server: Any, rq_conn: redis.Redis, aconn: Redis, aiorq_sync: redis.Redis
) -> None:
    monitor = Monitor(redis_server.url(0))
    try:
        for lib, conn in ((rq, rq_conn), (aiorq, aconn)):
            q = lib.Queue('q', connection=conn)
            datas = [q.prepare_data(tasks.add, (i, i), job_id=f'p{i}') for i in range(2)]
            await a(group_cls(lib)(conn, name='g').enqueue_many(q, datas))
    finally:
        monitor.stop()
    expected = [
        'SADD rq:queues rq:queue:q',
        'HSET rq:job:p0 status queued',
        'HSET rq:job:p0 <mapping>',
        'RPUSH rq:queue:q p0',
        'HSET rq:job:p1 status queued',
        'HSET rq:job:p1 <mapping>',
        'RPUSH rq:queue:q p1',
        'SADD rq:group:g p0 p1',
        'SADD rq:groups g',
    ]
    assert monitor.transactions(RQ_DB) == [expected]
    assert monitor.transactions(AIORQ_DB) == [expected]


# -- results: what stock rq wrote, read back by both libraries ----------------------------------

FIELDS = (
    'id',
    'job_id',
    'type',
    'created_at',
    'exc_string',
    'worker_name',
    'execution_id',
    'execution_started_at',
    'execution_ended_at',
)


def fields(result: Any) -> dict[str, Any]:
    """A Result's fields; a returned ``rq.Retry`` (no ``__eq__``) compares by its attributes."""
    out = {f: getattr(result, f) for f in FIELDS}
    value = result.return_value
    out['return_value'] = vars(value) if isinstance(value, rq.Retry) else value
    out['repr'] = repr(result)
    out['bool'] = bool(result)
    return out


def same(rq_result: Any, aiorq_result: Any) -> None:
    assert isinstance(aiorq_result, aiorq.Result)
    assert fields(aiorq_result) == fields(rq_result)
    assert aiorq_result == rq_result and rq_result == aiorq_result


def setup_outcomes(conn: redis.Redis) -> None:
    """Every result type stock rq writes: success, failure, retried, max-retries, abandoned."""
    q = rq.Queue('q', connection=conn)
    q.enqueue(tasks.add, 1, 2, job_id='ok')
    q.enqueue(tasks.returns_none, job_id='none')
    q.enqueue(tasks.fail, 'bad', job_id='bad')
    q.enqueue(tasks.fail, 'again', job_id='exc_retry', retry=rq.Retry(max=1))
    q.enqueue(tasks.returns_retry, job_id='retried')
    q.enqueue(tasks.add, 1, 1, job_id='twice', repeat=rq.Repeat(times=1))
    rq.Queue('json', connection=conn, serializer=JSONSerializer).enqueue(tasks.echo, 1, job_id='json')
    run_stock_worker(conn)
    run_stock_worker(conn, 'json', JSONSerializer)
    q.enqueue(tasks.add, 1, 2, job_id='lost')
    conn.lrem('rq:queue:q', 1, 'lost')
    conn.hset(RQJob.key_for('lost'), 'status', 'started')
    conn.zadd(StartedJobRegistry('q', connection=conn).key, {'lost:e1': current_timestamp() - 5})
    rq.registry.clean_registries(q)


OUTCOMES = {
    'ok': [rq.results.Result.Type.SUCCESSFUL],
    'none': [rq.results.Result.Type.SUCCESSFUL],
    'bad': [rq.results.Result.Type.FAILED],
    'exc_retry': [rq.results.Result.Type.FAILED],
    'retried': [rq.results.Result.Type.MAX_RETRIES_EXCEEDED, rq.results.Result.Type.RETRIED],
    'twice': [rq.results.Result.Type.SUCCESSFUL, rq.results.Result.Type.SUCCESSFUL],
    'lost': [rq.results.Result.Type.FAILED],
}


async def test_results_read_back_as_rq_reads_them(sync_conn: redis.Redis, conn: Redis) -> None:
    setup_outcomes(sync_conn)
    for job_id, types in OUTCOMES.items():
        rq_job = RQJob.fetch(job_id, connection=sync_conn)
        job = await aiorq.Job.fetch(job_id, connection=conn)
        rq_all = rq.results.Result.all(rq_job)
        ai_all = await aiorq.Result.all(job)
        assert [r.type for r in ai_all] == types, job_id
        assert len(ai_all) == len(rq_all) == await aiorq.Result.count(job) == rq.results.Result.count(rq_job)
        for x, y in zip(rq_all, ai_all):
            same(x, y)
        same(rq.results.Result.fetch_latest(rq_job), await aiorq.Result.fetch_latest(job))
        # With entries present, a timeout returns the newest at once in both libraries.
        started = time.monotonic()
        same(rq.results.Result.fetch_latest(rq_job, timeout=1), await aiorq.Result.fetch_latest(job, timeout=1))
        assert time.monotonic() - started < 0.9
        # The job's own readers return aiorq Results with the same values.
        same(rq_job.latest_result(), await job.latest_result())
        for x, y in zip(rq_job.results(), await job.results()):
            same(x, y)
        assert await job.result_count() == len(types)
        assert await job.return_value() == rq_job.return_value()
        assert rq.results.Result.fetch(rq_job) is None and await aiorq.Result.fetch(job) is None

    ok = await aiorq.Result.fetch_latest(await aiorq.Job.fetch('ok', connection=conn))
    assert ok is not None and ok.return_value == 3 and ok.worker_name == 'w'
    assert ok.execution_id and isinstance(ok.execution_started_at, datetime) and ok.exc_string is None
    bad = await aiorq.Result.fetch_latest(await aiorq.Job.fetch('bad', connection=conn))
    assert bad is not None and bad.return_value is None and 'ValueError: bad' in (bad.exc_string or '')
    lost = await aiorq.Result.fetch_latest(await aiorq.Job.fetch('lost', connection=conn))
    assert lost is not None and lost.worker_name == '' and lost.execution_id is None
    assert 'AbandonedJobError' in (lost.exc_string or '')

    # Like rq's, Result.fetch_latest uses its own serializer argument; the job's readers use the job's.
    rq_json = RQJob.fetch('json', connection=sync_conn, serializer=JSONSerializer)
    json_job = await aiorq.Job.fetch('json', connection=conn, serializer=JSONSerializer)
    same(
        rq.results.Result.fetch_latest(rq_json, serializer=JSONSerializer),
        await aiorq.Result.fetch_latest(json_job, serializer=JSONSerializer),
    )
    assert (await json_job.latest_result()).return_value == [[1], {}]  # type: ignore[union-attr]


async def test_restore_decodes_like_rq(sync_conn: redis.Redis) -> None:
    setup_ran(sync_conn)
    for job_id in ('ok', 'bad', 'retried'):
        for entry_id, payload in sync_conn.xrange(aiorq.Result.get_key(job_id)):
            x = rq.results.Result.restore(job_id, entry_id.decode(), payload, connection=sync_conn)
            y = aiorq.Result.restore(job_id, entry_id.decode(), payload, connection=None)
            same(x, y)
    assert aiorq.Result.get_key('j') == rq.results.Result.get_key('j')


async def test_fetch_latest_waits_for_an_entry(sync_conn: redis.Redis, conn: Redis) -> None:
    rq_job = rq.Queue('q', connection=sync_conn).enqueue(tasks.add, 2, 2)
    job = await aiorq.Job.fetch(rq_job.id, connection=conn)
    started = time.monotonic()
    assert await aiorq.Result.fetch_latest(job, timeout=1) is None
    assert 0.9 <= time.monotonic() - started < 3
    waiter = asyncio.ensure_future(aiorq.Result.fetch_latest(job, timeout=1))
    await asyncio.sleep(0.3)
    assert not waiter.done()
    # Stock rq writes the entry while aiorq waits.
    written = rq.results.Result.create(rq_job, rq.results.Result.Type.SUCCESSFUL, ttl=100, return_value=4)
    got = await asyncio.wait_for(waiter, 2)
    assert got is not None and got.id == written.id and got.return_value == 4
    same(rq.results.Result.fetch_latest(rq_job), got)


async def test_result_api_is_rqs(sync_conn: redis.Redis, conn: Redis) -> None:
    assert aiorq.Result.Type is rq.results.Result.Type
    assert aiorq.Result.Type.SUCCESSFUL == rq.results.Result.Type.SUCCESSFUL
    assert issubclass(aiorq.Result, rq.results.Result)
    fresh = aiorq.Result('j', aiorq.Result.Type.FAILED, conn, exc_string='x')
    assert not fresh and fresh.connection is conn and repr(fresh) == 'Result(id=None, type=FAILED)'
    setup_ran(sync_conn)
    job = await aiorq.Job.fetch('ok', connection=conn)
    latest = await job.latest_result()
    assert latest is not None and latest.connection is conn
    # Writing results is the worker's: refused with a message, nothing written.
    with pytest.raises(NotImplementedError, match='does not write results'):
        latest.save(ttl=10)
    with pytest.raises(NotImplementedError, match='does not write results'):
        aiorq.Result.create(job, aiorq.Result.Type.SUCCESSFUL, 10, return_value=1)
    with pytest.raises(NotImplementedError, match='does not write results'):
        aiorq.Result.create_failure(job, 10, 'boom')
    assert await aiorq.Result.count(job) == 1
    # An rq job on a blocking client is refused rather than read on the event loop.
    with pytest.raises(TypeError, match='rq.results.Result'):
        await aiorq.Result.fetch_latest(RQJob.fetch('ok', connection=sync_conn))  # type: ignore[arg-type]
