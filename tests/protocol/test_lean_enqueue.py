"""The lean enqueue (``aiorq.protocol.lean_enqueue``) against rq's path, over generated calls:

* :meth:`Maker.job` gives the job ``rq.Queue.create_job`` gives (every attribute, on the no-I/O
  codec queue), or raises the same error;
* :func:`lean_enqueue.fields` writes what ``to_dict()`` writes (the enqueue's ``HSET`` items,
  ``status`` first, in the same order, encoded as they are sent);
* :data:`lean_enqueue.ENQUEUE_MANY_SCRIPT` filled by :func:`lean_enqueue.template` (what
  ``enqueue_many`` sends for such jobs) leaves the hashes, list and expiries that rq's fields sent
  through the general script leave (a real Redis);
* :func:`lean_enqueue.encodable` is False for a job in any state the encoder does not cover, so
  ``enqueue._fields`` takes ``to_dict()`` for it;
* the rule (:func:`lean_enqueue.plain_options`) lets through exactly the calls without the
  excluded options, and ``Queue.enqueue`` / ``enqueue_many`` make their jobs by it.

Hypothesis runs derandomized (the same examples every run) and without a database.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import redis
import redis.asyncio
import tasks
from hypothesis import given
from hypothesis import strategies as st
from property_settings import derandomized
from rq.callbacks import Callback
from rq.job import Dependency, JobStatus, Retry
from rq.queue import Queue as RQQueue
from rq.repeat import Repeat
from rq.serializers import JSONSerializer
from rq.webhook import Webhook

from aiorq import Queue
from aiorq.protocol import codec, enqueue, keys, lean_enqueue, scripts, wire

FAST = derandomized(300)
REDIS = derandomized(100, redis=True)
CREATED = datetime(2100, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc)
ENQUEUED = CREATED + timedelta(seconds=1, microseconds=2)

seconds = st.one_of(
    st.none(),
    st.integers(-5, 10**6),
    st.sampled_from(['1h', '23m', '5s', '2d', '7', '1x', 'abc', 2.5, True, 0]),
)
text = st.text(st.characters(codec='utf-8', exclude_categories=['Cs']), max_size=20)
# reprs of 74, 75 and 76 characters: rq's description cuts an argument's repr after 75
long_text = st.sampled_from(['x' * 72, 'x' * 73, 'x' * 74])
values = st.recursive(
    st.none() | st.booleans() | st.integers() | text | long_text,
    lambda inner: st.lists(inner, max_size=3),
    max_leaves=6,
)
calls = st.fixed_dictionaries(
    {
        'func': st.sampled_from([tasks.add, tasks.echo, 'tasks.add', 'tasks.echo', tasks.Adder(1).add, len]),
        'args': st.one_of(st.none(), st.lists(values, max_size=3).map(tuple), st.lists(values, max_size=3)),
        'kwargs': st.one_of(st.none(), st.dictionaries(st.sampled_from(['a', 'b', 'k']), values, max_size=2)),
        'timeout': seconds,
        'result_ttl': seconds,
        'ttl': seconds,
        'failure_ttl': seconds,
        'description': st.one_of(st.none(), st.just(''), text),
        'job_id': st.one_of(st.none(), st.sampled_from(['job-1', 'a_b', '', 'bad id', 'x' * 40])),
        'meta': st.one_of(st.none(), st.just({}), st.dictionaries(st.sampled_from(['m', 'n']), values, max_size=2)),
        'group_id': st.one_of(st.none(), st.just('g1')),
    }
)
setups = st.tuples(
    st.sampled_from(['default', 'q', '']),  # queue name ('' is no origin)
    st.sampled_from([None, JSONSerializer]),
    st.sampled_from([None, 30, '2m']),  # the queue's default timeout
)


def rq_create(queue: RQQueue, call: dict[str, Any]) -> Any:
    return queue.create_job(status=JobStatus.QUEUED, **call)


def outcome(make: Any) -> tuple[str, Any]:
    try:
        return 'job', make()
    except Exception as e:
        return 'error', (type(e), str(e))


def packed(items: list[Any]) -> bytes:
    return wire.pack(items, 'utf-8', 'strict')


@FAST
@given(calls, setups)
def test_a_lean_job_and_its_fields_are_rqs(call: dict[str, Any], setup: tuple[str, Any, Any]) -> None:
    name, serializer, default_timeout = setup
    rq_queue = codec.codec_queue(name, serializer, default_timeout)
    maker = lean_enqueue.Maker(name, rq_queue.serializer, rq_queue._default_timeout)
    theirs = outcome(lambda: rq_create(rq_queue, call))
    ours = outcome(lambda: maker.job(call['func'], call['args'], call['kwargs'], **_options(call)))
    assert ours[0] == theirs[0], (ours, theirs)
    if theirs[0] == 'error':
        assert ours == theirs
        return
    rq_job, lean_job = theirs[1], ours[1]
    if call['job_id'] is None:  # a random id, drawn as rq draws it
        assert uuid.UUID(lean_job.id).version == 4 and str(uuid.UUID(lean_job.id)) == lean_job.id
    for job in (rq_job, lean_job):
        job.created_at = CREATED
        job.id  # noqa: B018 - rq draws its id on first use
        job._id = 'same-id'
    assert vars(lean_job).keys() == vars(rq_job).keys()
    for key, value in vars(rq_job).items():
        assert vars(lean_job)[key] == value, key
    assert lean_job.webhooks is not rq_job.webhooks and lean_job._dependency_ids is not rq_job._dependency_ids
    for job in (rq_job, lean_job):
        enqueue.prepare_for_queue(job, name, rq_queue._default_timeout)
        job.enqueued_at = ENQUEUED
    assert lean_enqueue.encodable(lean_job)
    rq_fields = outcome(lambda: packed(_rq_fields(rq_job)))
    lean_fields = outcome(lambda: packed(lean_enqueue.fields(lean_job)))
    assert lean_fields == rq_fields
    # enqueue._fields takes the lean encoder for this job: the same items, the same error.
    assert outcome(lambda: packed(enqueue._fields(lean_job)))[0] == rq_fields[0]


def _options(call: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in call.items() if k not in ('func', 'args', 'kwargs')}


def _rq_fields(job: Any) -> list[Any]:
    """``enqueue._fields`` on rq's path: ``to_dict()``, ``status`` first."""
    mapping = codec.mapping(job)
    items: list[Any] = ['status', mapping.pop('status')]
    for item in mapping.items():
        items += item
    return items


# A queued plain job changed in one way the encoder does not cover: to_dict() writes more.
NOT_ENCODABLE = {
    'success callback': lambda j: setattr(j, '_success_callback_name', 'tasks.on_success_cb'),
    'failure callback timeout': lambda j: setattr(j, '_failure_callback_timeout', 5),
    'retries': lambda j: setattr(j, 'retries_left', 2),
    'retry intervals': lambda j: setattr(j, 'retry_intervals', [1]),
    'front on retry': lambda j: setattr(j, 'enqueue_at_front_on_retry', True),
    'number of retries': lambda j: setattr(j, 'number_of_retries', 1),
    'repeats': lambda j: setattr(j, 'repeats_left', 1),
    'repeat intervals': lambda j: setattr(j, 'repeat_intervals', [3]),
    'dependency': lambda j: setattr(j, '_dependency_ids', ['a']),
    'allow failures': lambda j: setattr(j, 'allow_dependency_failures', False),
    'at front': lambda j: setattr(j, 'enqueue_at_front', True),
    'rate limit': lambda j: setattr(j, 'rate_limit_key', 'k'),
    'webhooks': lambda j: setattr(j, 'webhooks', [Webhook('http://example.invalid/hook', 'finished')]),
    'started': lambda j: setattr(j, 'started_at', CREATED),
    'worker': lambda j: setattr(j, 'worker_name', 'w'),
    'result': lambda j: setattr(j, '_result', 1),
    'exc_info': lambda j: setattr(j, '_exc_info', 'boom'),
    'unreadable meta': lambda j: setattr(j, '_unreadable_meta', b'x'),
    'not queued': lambda j: setattr(j, '_status', JobStatus.SCHEDULED),
    'no created_at': lambda j: setattr(j, 'created_at', None),
}


@pytest.mark.parametrize('change', NOT_ENCODABLE.values(), ids=list(NOT_ENCODABLE))
def test_a_job_in_another_state_is_encoded_by_to_dict(change: Any) -> None:
    rq_queue = codec.codec_queue('q')
    job = lean_enqueue.Maker('q', rq_queue.serializer, rq_queue._default_timeout).job(tasks.add, (1, 2), None)
    enqueue.prepare_for_queue(job, 'q', 180)
    assert lean_enqueue.encodable(job)
    change(job)
    assert not lean_enqueue.encodable(job)
    if job.created_at is not None:
        assert packed(enqueue._fields(job)) == packed(_rq_fields(job))


EXCLUDED = {
    'depends_on': Dependency(['a']),
    'retry': Retry(max=2),
    'repeat': Repeat(times=1),
    'on_success': Callback(tasks.on_success_cb),
    'on_failure': Callback(tasks.on_failure_cb),
    'on_stopped': Callback(tasks.on_stopped_cb),
    'webhooks': [],  # given, even empty
    'rate_limit': object(),
}


def test_the_rule_lets_through_only_calls_without_the_excluded_options() -> None:
    none = dict.fromkeys(EXCLUDED)
    assert lean_enqueue.plain_options(**none)
    for name, value in EXCLUDED.items():
        assert not lean_enqueue.plain_options(**{**none, name: value}), name


@pytest.mark.parametrize(
    ('options', 'lean'),
    [
        ({}, True),
        ({'job_timeout': '1h', 'result_ttl': 5, 'ttl': 60, 'description': 'd', 'job_id': 'j1', 'meta': {'a': 1}}, True),
        ({'retry': Retry(max=1)}, False),
        ({'on_success': Callback(tasks.on_success_cb)}, False),
        ({'repeat': Repeat(times=1)}, False),
    ],
)
def test_enqueue_makes_its_job_by_the_rule(options: dict[str, Any], lean: bool, monkeypatch: Any) -> None:
    """The queue asks the maker exactly when the rule says (checked without sending anything)."""
    made: list[Any] = []
    queue = Queue('q', connection=object())  # type: ignore[arg-type]
    real = queue._maker.job
    monkeypatch.setattr(queue._maker, 'job', lambda *a, **k: made.append(1) or real(*a, **k))
    sent: list[Any] = []

    async def enqueue_job(job: Any, **kwargs: Any) -> Any:
        sent.append(job)
        return job

    monkeypatch.setattr(queue, 'enqueue_job', enqueue_job)
    asyncio.run(queue.enqueue(tasks.add, 1, 2, **options))
    assert len(made) == int(lean)


@FAST
@given(st.lists(values, max_size=4), st.dictionaries(st.sampled_from(['a', 'b', 'k', 'z']), values, max_size=3))
def test_the_description_is_rqs(args: list[Any], kwargs: dict[str, Any]) -> None:
    rq_queue = codec.codec_queue('q')
    maker = lean_enqueue.Maker('q', rq_queue.serializer, rq_queue._default_timeout)
    assert maker.job(tasks.echo, args, kwargs).description == rq_queue.create_job(tasks.echo, args, kwargs).description


def test_new_ids_are_uuid4_strings() -> None:
    ids = [lean_enqueue.new_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(text)
        assert str(parsed) == text and parsed.version == 4 and parsed.variant == uuid.RFC_4122
    # every bit but the version's and the variant's varies
    bits = [uuid.UUID(t).int for t in ids]
    fixed = (0xF000 << 64) | (0xC000 << 48)
    assert all(b & fixed == (4 << 76) | (0x8000 << 48) for b in bits)
    anded, ored = ~0, 0
    for b in bits:
        anded &= b
        ored |= b
    assert (ored & ~fixed) == ((1 << 128) - 1) & ~fixed and (anded & ~fixed) == 0


def _serializable_job(maker: lean_enqueue.Maker, call: dict[str, Any]) -> Any:
    """The maker's job for ``call``, or None when rq refuses the call or cannot serialize it."""
    try:
        job = maker.job(call['func'], call['args'], call['kwargs'], **_options(call))
        codec.mapping(job)
    except Exception:
        return None
    return job


def _snapshot(conn: redis.Redis, name: str, ids: list[str]) -> Any:
    """The hashes (fields in their stored order), the queue list and every expiry."""
    hashes = [list(conn.hgetall(keys.job(i)).items()) for i in ids]
    ttls = [conn.ttl(k(i)) > 0 for i in ids for k in (keys.job, keys.dependents, keys.dependencies)]
    return hashes, conn.lrange(keys.queue(name), 0, -1), conn.smembers(keys.QUEUES), ttls


@REDIS
@given(st.lists(st.tuples(calls, st.booleans()), min_size=1, max_size=4), setups)
def test_the_lean_batch_script_writes_what_rqs_fields_write(
    sync_conn: redis.Redis, redis_url: str, batch: list[tuple[dict[str, Any], bool]], setup: tuple[str, Any, Any]
) -> None:
    name, serializer, default_timeout = setup
    rq_queue = codec.codec_queue(name, serializer, default_timeout)
    maker = lean_enqueue.Maker(name, rq_queue.serializer, rq_queue._default_timeout)
    jobs: dict[str, tuple[Any, bool]] = {}
    for call, front in batch:
        job = _serializable_job(maker, call)
        if job is not None:
            jobs.setdefault(job.id, (job, front))
    if not jobs:
        return
    pairs = list(jobs.values())

    def existing_sets() -> None:  # sets an expiry shows on (an id used before)
        sync_conn.flushdb()
        for job_id in jobs:
            sync_conn.sadd(keys.dependents(job_id), 'x')
            sync_conn.sadd(keys.dependencies(job_id), 'y')

    existing_sets()

    async def lean() -> None:
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            await enqueue.enqueue_many_plain(client, pairs, name, rq_queue._default_timeout)
        finally:
            await client.aclose()

    asyncio.run(lean())
    assert all(lean_enqueue.encodable(job) for job, _ in pairs)  # so the lean script wrote them
    ours = _snapshot(sync_conn, name, list(jobs))
    existing_sets()
    ks: list[Any] = [keys.QUEUES, keys.queue(name)]
    args: list[Any] = [keys.queue(name)]
    for job, front in pairs:  # the general script with rq's fields (to_dict()), same jobs
        items = _rq_fields(job)
        ks += [keys.job(job.id), keys.dependents(job.id), keys.dependencies(job.id)]
        args += [job.id, 'L' if front else 'R', job.ttl or 0, len(items), *items]
    sync_conn.eval(scripts.ENQUEUE_MANY_SCRIPT, len(ks), *ks, *args)
    assert ours == _snapshot(sync_conn, name, list(jobs))


# -- the wire under awaited enqueues: the connection kept for the next call goes back ----------


async def test_the_connection_kept_between_enqueues_goes_back_to_the_pool(redis_url: str) -> None:
    """A loop of awaited enqueues keeps its connection from one call to the next (no pool
    checkout), and gives it back on the loop's next turn: a one-connection pool still serves
    other commands between and after the enqueues, and only one connection is ever opened."""
    pool = redis.asyncio.BlockingConnectionPool.from_url(
        redis_url, max_connections=1, timeout=2, client_name='kept-between-enqueues'
    )
    client = redis.asyncio.Redis(connection_pool=pool)
    try:
        queue = Queue('kept', connection=client)
        for i in range(20):
            await queue.enqueue(tasks.add, i, 1)
            await queue.enqueue(tasks.add, i, 2)
            assert await client.llen('rq:queue:kept') == 2 * (i + 1)  # waits for the pool's only connection
        ours = [c for c in await client.client_list() if c['name'] == 'kept-between-enqueues']
        assert len(ours) == 1
    finally:
        await client.aclose()
