"""The lean job codec (``aiorq.protocol.lean``) against rq's objects, over jobs generated with
rq's own API (``Job.create`` on the no-I/O codec connection; the stored hash is ``to_dict()`` as
redis-py encodes it, which is what rq's ``save`` sends):

* :func:`lean.decode` agrees with ``Job.restore`` on every field the worker uses, and finds
  every hash rq writes regular;
* :func:`lean.needs_rq_job` is True exactly when the module's rule says, and a hash it calls
  irregular is one that rq's reader rejects or rq's save would rewrite;
* for each outcome, the job hash the lean encoders leave (the stored hash, the start fields,
  the outcome's fields) is the one the current path leaves (a real claim and the real
  ``finish`` functions, on a private Redis), and for success and failure also the one stock
  rq's own success and failure handling leaves; the results-stream entry likewise.

Hypothesis runs derandomized (the same examples every run) and without a database.
"""

from __future__ import annotations

import functools
import json
import os.path
import subprocess
import sys
import zlib
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import redis
import tasks
from hypothesis import event, given, settings
from hypothesis import strategies as st
from property_settings import derandomized
from redis.asyncio import Redis
from rq.callbacks import Callback
from rq.exceptions import DeserializationError, NoSuchJobError
from rq.job import Dependency, Job, JobStatus, Retry
from rq.repeat import Repeat
from rq.results import Result
from rq.serializers import DefaultSerializer, JSONSerializer
from rq.utils import str_to_date, utcformat
from rq.webhook import Webhook

from aiorq.protocol import codec, dequeue, finish, keys, lean

WORKER = 'w1'
START = datetime(2100, 1, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)  # the claim's clock reading
ENDED = START + timedelta(seconds=2, microseconds=345678)
EXC = 'Traceback (most recent call last):\n  boom ✗\nValueError: boom'

FAST = derandomized(200)
REDIS = derandomized(100, redis=True)

# -- generated jobs ------------------------------------------------------------------------

ids = st.one_of(st.uuids().map(str), st.from_regex(r'[A-Za-z0-9_-]{1,40}', fullmatch=True))
moments = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31)).map(
    lambda d: d.replace(tzinfo=timezone.utc)
)
ttls = st.one_of(st.none(), st.sampled_from([-1, 0]), st.integers(1, 10**8))
timeouts = st.one_of(st.none(), st.just(-1), st.integers(1, 10**7), st.sampled_from(['1h', '30m', '45s', '2d']))
large = st.builds(lambda n, b: b * n, st.integers(1, 40_000), st.binary(min_size=1, max_size=4))
texts = st.text(max_size=30)
json_values = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), texts
)
pickle_values = st.one_of(json_values, st.binary(max_size=30), large, large.map(lambda b: b.decode('latin-1')))
QUEUED = st.just(JobStatus.QUEUED)
callbacks = st.one_of(st.none(), st.builds(Callback, st.sampled_from(['tasks.cb', 'os.path.basename']), ttls))


def sometimes(draw: st.DrawFn, strategy: st.SearchStrategy[Any], one_in: int = 6) -> Any:
    """A value of ``strategy`` about once in ``one_in`` draws, else None: the options that send a job
    to rq's path stay rare enough that most examples exercise the lean one."""
    # sampled_from leans to its first element (False), where integers lean to the bounds
    return draw(strategy) if draw(st.sampled_from([False] * (one_in - 1) + [True])) else None


def funcs(json_only: bool) -> st.SearchStrategy[Any]:
    plain = [os.path.join, len, 'tasks.add']  # a function, a builtin, a dotted name
    # and, pickled only, a bound method (its instance goes into the payload) and a callable object
    return st.sampled_from(plain if json_only else [*plain, tasks.Adder(2).add, functools.partial(max, 1)])


@st.composite
def jobs(draw: st.DrawFn, statuses: st.SearchStrategy[JobStatus] = QUEUED) -> Job:
    """A job as rq's enqueue leaves it (``Queue.create_job`` + enqueue), sometimes after an
    earlier run (a retried or requeued job), with every option rq has drawn."""
    json_only = draw(st.booleans())
    values = json_values if json_only else pickle_values
    depends = draw(st.one_of(st.none(), st.lists(ids, min_size=1, max_size=3)))
    if depends and draw(st.booleans()):
        depends = Dependency(depends, allow_failure=draw(st.booleans()), enqueue_at_front=draw(st.booleans()))
    with_callbacks = draw(st.sampled_from([False] * 5 + [True]))
    job = Job.create(
        draw(funcs(json_only)),
        args=draw(st.lists(values, max_size=4)),
        kwargs=draw(st.dictionaries(texts, values, max_size=3)),
        connection=codec.NOIO,
        result_ttl=draw(ttls),
        ttl=draw(ttls),
        failure_ttl=draw(ttls),
        description=draw(st.one_of(st.none(), texts)),
        depends_on=depends,
        timeout=draw(timeouts),
        retry=sometimes(draw, st.builds(Retry, st.integers(1, 5), _intervals, st.booleans())),
        id=draw(ids),
        origin=draw(st.from_regex(r'[a-z][a-z0-9_.-]{0,15}', fullmatch=True)),
        meta=draw(st.dictionaries(texts, values, max_size=3)),
        serializer=JSONSerializer if json_only else None,
        group_id=draw(st.one_of(st.none(), st.from_regex(r'[A-Za-z0-9_-]{1,20}', fullmatch=True))),
        status=draw(statuses),
        on_success=with_callbacks and draw(callbacks),
        on_failure=with_callbacks and draw(callbacks),
        on_stopped=with_callbacks and draw(callbacks),
        webhooks=sometimes(draw, st.just([Webhook('http://example.invalid/hook', 'finished')]), 8),
    )
    repeat = sometimes(draw, st.builds(Repeat, st.integers(1, 4), _intervals))
    if repeat is not None:
        job.repeats_left, job.repeat_intervals = repeat.times, repeat.intervals
    if draw(st.integers(0, 4)) == 0:
        job.rate_limit_key, job.rate_limit_concurrency = draw(texts.filter(bool)), draw(st.integers(1, 9))
    job.created_at = draw(moments)
    job.enqueued_at = draw(st.one_of(st.none(), moments))
    _earlier_run(draw, job)
    return job


_intervals = st.one_of(st.integers(0, 100), st.lists(st.integers(0, 100), min_size=1, max_size=4))


def _earlier_run(draw: st.DrawFn, job: Job) -> None:
    """What an earlier execution leaves: retried (its times and worker), requeued from the failed
    registry (``exc_info`` compressed ''), or a returned ``Retry`` (``number_of_retries`` and the
    legacy ``result``)."""
    kind = draw(st.sampled_from(['fresh', 'retried', 'requeued', 'returned_retry']))
    if kind == 'fresh':
        return
    job.started_at, job.last_heartbeat = draw(moments), draw(moments)
    job.worker_name = draw(st.from_regex(r'[a-z0-9.-]{1,12}', fullmatch=True))
    job.ended_at = draw(moments)
    if kind == 'requeued':
        job.started_at = job.ended_at = None
        job._exc_info = ''
    elif kind == 'returned_retry':
        job.number_of_retries = draw(st.integers(1, 5))
        job._result = Retry(3) if job.serializer is not JSONSerializer else 'retried'


def stored(job: Job) -> dict[bytes, bytes]:
    """The hash rq's ``save()`` leaves: ``to_dict()`` as redis-py encodes it."""
    return {k.encode(): codec.encode(v) for k, v in job.to_dict().items()}


def rq_restore(job_id: str, raw: dict[bytes, bytes], serializer: Any) -> Job:
    """Stock rq's reader, untouched: ``Job(id)`` + ``Job.restore``."""
    job = Job(job_id, connection=codec.NOIO, serializer=serializer)
    job.restore(raw)
    return job


def _date(value: bytes | None) -> datetime | None:
    return None if value is None else str_to_date(value)


def assert_agrees(claimed: lean.JobRecord, job: Job, serializer: Any) -> None:
    """Every field the worker uses, lean against rq's restored job."""
    assert claimed.irregular is None and claimed.status == job.get_status(refresh=False)
    call = lean.decode_call(claimed, serializer)
    dumps = (serializer or DefaultSerializer).dumps  # equal content (a partial has no __eq__)
    assert dumps(tuple(call)) == dumps((job.func_name, job.instance, job.args, job.kwargs))
    assert call.func.__name__ == job.func.__name__
    for name in (
        'origin description timeout result_ttl failure_ttl ttl worker_name group_id retries_left '
        'number_of_retries enqueue_at_front_on_retry repeats_left allow_dependency_failures '
        'enqueue_at_front rate_limit_key rate_limit_concurrency has_rate_limit should_retry'
    ).split():
        assert getattr(claimed, name) == getattr(job, name), name
    for name in 'created_at enqueued_at started_at ended_at last_heartbeat'.split():
        assert _date(getattr(claimed, name)) == getattr(job, name), name
    for name in 'success failure stopped'.split():
        assert getattr(claimed, f'{name}_callback_name') == getattr(job, f'_{name}_callback_name')
        assert getattr(claimed, f'{name}_callback_timeout') == getattr(job, f'_{name}_callback_timeout')
    assert claimed.retry_intervals == (None if job.retry_intervals is None else tuple(job.retry_intervals))
    assert claimed.repeat_intervals == (None if job.repeat_intervals is None else tuple(job.repeat_intervals))
    assert list(claimed.dependency_ids) == job._dependency_ids
    loads = (serializer or DefaultSerializer).loads
    assert (loads(claimed.meta) if claimed.meta else {}) == job.meta
    hooks = json.loads(claimed.webhooks) if claimed.webhooks else []
    assert hooks == [w.to_dict() for w in job.webhooks]
    assert claimed.get_result_ttl(500) == job.get_result_ttl(500)


def expected_fallback(job: Job) -> str | None:
    """The module's rule, stated on rq's job."""
    if job._success_callback_name or job._failure_callback_name or job._stopped_callback_name:
        return 'callbacks'
    if job.should_retry:
        return 'retries'
    if job.repeats_left is not None and job.repeats_left > 0:
        return 'repeats'
    if job.webhooks:
        return 'webhooks'
    return None


def rewritten(job_id: str, raw: dict[bytes, bytes], serializer: Any) -> dict[bytes, tuple[Any, bytes]]:
    """The fields rq's outcome save (no meta, no result) would write with other bytes than
    stored, for a hash rq can read."""
    job = rq_restore(job_id, raw, serializer)
    out = job.to_dict(include_meta=False, include_result=False)
    return {
        k.encode(): (raw.get(k.encode()), codec.encode(v))
        for k, v in out.items()
        if raw.get(k.encode()) != codec.encode(v)
    }


# -- decode -------------------------------------------------------------------------------


@FAST
@given(jobs(), st.booleans())
def test_decode_agrees_with_rq_restore(job: Job, started: bool) -> None:
    raw = stored(job)
    if started:
        raw.update(lean.encode_start(WORKER, START))
    serializer = serializer_of(job)
    claimed = lean.decode(job.id, raw)
    assert_agrees(claimed, rq_restore(job.id, raw, serializer), serializer)
    assert claimed.fallback == expected_fallback(job)
    assert lean.needs_rq_job(claimed) == (expected_fallback(job) is not None)
    # Regular: rq's save writes every field back as stored (what the encoders rely on).
    assert rewritten(job.id, raw, serializer) == {}
    # The job rq's path gets on demand is rq's own reading of the same hash.
    assert lean.rq_job(claimed, serializer).to_dict() == rq_restore(job.id, raw, serializer).to_dict()


@settings(FAST, max_examples=60)
@given(jobs(statuses=st.sampled_from(list(JobStatus))))
def test_every_status_decodes(job: Job) -> None:
    claimed = lean.decode(job.id, stored(job))
    assert claimed.irregular is None and claimed.status is job.get_status(refresh=False)


# Changes that make a hash irregular: (what, change). Each yields a hash rq rejects or rewrites.
IRREGULAR: list[tuple[str, Callable[[dict[bytes, bytes]], None]]] = [
    *[(f'missing {f.decode()}', lambda h, f=f: h.pop(f)) for f in sorted(lean.ALWAYS)],
    ('int with a sign', lambda h: h.__setitem__(b'timeout', b'+180')),
    ('int with spaces', lambda h: h.__setitem__(b'result_ttl', b' 500')),
    ('int as float', lambda h: h.__setitem__(b'failure_ttl', b'5.0')),
    ('timeout with a unit', lambda h: h.__setitem__(b'timeout', b'3m')),
    ('flag 2', lambda h: h.__setitem__(b'allow_dependency_failures', b'2')),
    ('empty flag rq parses', lambda h: h.__setitem__(b'enqueue_at_front', b'')),
    ('retry flag 7', lambda h: h.__setitem__(b'enqueue_at_front_on_retry', b'7')),
    ('older date format', lambda h: h.__setitem__(b'created_at', b'2026-11-29T01:02:03Z')),
    ('no such day', lambda h: h.__setitem__(b'enqueued_at', b'2026-02-30T01:02:03.000001Z')),
    ('date garbage', lambda h: h.__setitem__(b'ended_at', b'yesterday')),
    ('empty created_at', lambda h: h.__setitem__(b'created_at', b'')),
    ('JSON spacing', lambda h: h.__setitem__(b'retry_intervals', b'[1,2]')),
    ('JSON garbage', lambda h: h.__setitem__(b'repeat_intervals', b'[1,')),
    ('lone dependency_id', lambda h: (h.pop(b'dependency_ids', None), h.__setitem__(b'dependency_id', b'A'))),
    ('dependency_id not the first', lambda h: h.update({b'dependency_ids': b'["A", "B"]', b'dependency_id': b'B'})),
    ('uncompressed data', lambda h: h.__setitem__(b'data', zlib.decompress(h[b'data']))),
    ('data at another level', lambda h: h.__setitem__(b'data', zlib.compress(zlib.decompress(h[b'data']), 1))),
    ('invalid UTF-8', lambda h: h.__setitem__(b'origin', b'\xff\xfe')),
    ('unknown status', lambda h: h.__setitem__(b'status', b'paused')),
    ('empty status', lambda h: h.__setitem__(b'status', b'')),
    ('empty callback timeout', lambda h: h.__setitem__(b'failure_callback_timeout', b'')),
    ('exc_info not UTF-8', lambda h: h.__setitem__(b'exc_info', zlib.compress(b'\xff'))),
]


@pytest.mark.parametrize('change', IRREGULAR, ids=[what for what, _ in IRREGULAR])
@settings(FAST, max_examples=5)
@given(job=jobs())
def test_irregular_hashes_fall_back(job: Job, change: tuple[str, Callable[[dict[bytes, bytes]], None]]) -> None:
    """An irregular hash takes rq's path, and each is one rq rejects or would rewrite."""
    raw = stored(job)
    raw.update(lean.encode_start(WORKER, START))
    change[1](raw)
    claimed = lean.decode(job.id, raw)
    assert claimed.irregular is not None and lean.needs_rq_job(claimed), change[0]
    assert claimed.fallback == f'irregular {claimed.irregular}'
    serializer = serializer_of(job)
    try:
        changed = rewritten(job.id, raw, serializer)
    except Exception:
        return  # rq cannot read it either: rq_job() raises rq's error
    assert changed, change[0]


def test_invalid_job_id_and_empty_hash() -> None:
    raw = stored(Job.create('tasks.add', connection=codec.NOIO, id='x'))
    claimed = lean.decode('a:b', raw)
    assert claimed.irregular == 'id'
    with pytest.raises(ValueError):
        lean.rq_job(claimed)
    with pytest.raises(NoSuchJobError):
        lean.decode('x', {})


def test_undecodable_payload_names_the_job() -> None:
    raw = stored(Job.create('tasks.add', connection=codec.NOIO, id='x'))
    raw[b'data'] = zlib.compress(b'not a pickle')
    with pytest.raises(DeserializationError, match='job x'):
        lean.decode_call(lean.decode('x', raw))


@FAST
@given(st.datetimes(min_value=datetime(1, 1, 1), timezones=st.sampled_from([None, timezone.utc])))
def test_stamp_is_utcformat(when: datetime) -> None:
    assert lean.stamp(when) == utcformat(when).encode()


# -- encoders against the current path and stock rq, on Redis ---------------------------------


def serializer_of(job: Job) -> Any:
    return job.serializer if job.serializer is JSONSerializer else None


async def _save_and_claim(conn: Redis, job: Job) -> tuple[dequeue.Claimed, dict[bytes, bytes]]:
    """rq's save of the job, queued, then the worker's real claim at START."""
    await conn.flushdb()
    await conn.hset(keys.job(job.id), mapping=job.to_dict())
    await conn.rpush(keys.queue(job.origin), job.id)
    if job.group_id:  # Group.enqueue_many's set (deleting a job of a group needs it)
        await conn.sadd(keys.group(job.group_id), job.id)
    with mock.patch.object(dequeue, 'now', lambda: START):
        started, broken, _, _ = await dequeue.claim_executions(
            conn,
            WORKER,
            [job.origin],
            dequeue.new_execution_ids(1),
            want=1,
            interval=30,
            single=False,
            serializer=serializer_of(job),
        )
    assert not broken and len(started) == 1
    return started[0], await conn.hgetall(keys.job(job.id))


async def _outcome(conn: Redis, kind: str, ex: dequeue.Claimed, path: str = 'rq') -> dict[bytes, bytes]:
    """The outcome as the runner drives it, on rq's path (``path='rq'``: rq's job, ``to_dict()``)
    or as the worker writes it (``'worker'``: the lean path where the rule allows); the lean
    encoders' fields for it."""
    ex.ended_at = ex.last_heartbeat = ENDED  # what the runner sets
    job = ex.job if path == 'rq' else None
    if kind == 'success':
        if job is not None:
            await finish.rq_success(conn, WORKER, ex, {'r': 'é'}, 500, None)
        else:
            await finish.finish_success(conn, WORKER, ex, {'r': 'é'}, 500)
        return lean.encode_success(ENDED)
    if kind == 'stopped':
        ex.ended_at = ex.last_heartbeat = None
        await finish.finish_failure(conn, WORKER, job, ex, EXC, stopped=True)
        return lean.encode_failure(None, None, status=JobStatus.STOPPED)
    if kind == 'abandoned':  # a cold shutdown: ended, no heartbeat of its own
        ex.last_heartbeat = None
        await finish.finish_failure(conn, WORKER, job, ex, EXC)
        return lean.encode_failure(ENDED, None)
    record = kind == 'failure'
    await finish.finish_failure(conn, WORKER, job, ex, EXC, record=record)
    return lean.encode_failure(ENDED, ENDED, record=record)


def _skipped(kind: str, claimed: lean.JobRecord) -> bool:
    """Outcomes the lean encoders do not cover (rq's path); the rule must send them there."""
    if kind == 'success' and claimed.repeating:
        return True
    return kind != 'success' and kind != 'stopped' and claimed.should_retry


@REDIS
@given(
    jobs(),
    st.sampled_from(['success', 'failure', 'unrecorded', 'stopped', 'abandoned']),
    st.sampled_from(['rq', 'worker']),
)
async def test_outcome_fields_equal_the_current_path(conn: Redis, job: Job, kind: str, path: str) -> None:
    """rq's path (rq's job, ``to_dict()``) and the worker's own (the lean path where the rule
    allows it) both leave the stored hash with the lean encoders' fields applied."""
    stored_hash = stored(job)
    ex, after_start = await _save_and_claim(conn, job)
    assert after_start == stored_hash | lean.encode_start(WORKER, START)  # the claim script's start
    claimed = lean.decode(job.id, after_start)
    assert ex.record == claimed
    lean_fields = await _outcome(conn, kind, ex, path)
    if path == 'worker' and not claimed.fallback:
        # Lean where rq's job is not needed: only a deleting outcome (TTL 0) builds it.
        assert ex.rq_job_built == (
            claimed.get_result_ttl(500) == 0
            if kind == 'success'
            else (kind != 'unrecorded' and claimed.failure_ttl == 0)
        )
    now_stored = await conn.hgetall(keys.job(job.id))
    if _skipped(kind, claimed):
        event(f'{kind}: rq path')
        assert lean.needs_rq_job(claimed)
        return
    deleted = (
        claimed.get_result_ttl(500) == 0 if kind == 'success' else kind != 'unrecorded' and claimed.failure_ttl == 0
    )
    event(f'{kind}: {"deleted" if deleted else "compared"}, {"fallback" if claimed.fallback else "lean"}')
    assert now_stored == ({} if deleted else after_start | lean_fields)


@REDIS
@given(jobs(), st.sampled_from(['success', 'failure']))
async def test_outcome_fields_equal_stock_rq(conn: Redis, sync_conn: redis.Redis, job: Job, kind: str) -> None:
    """Stock rq's own start (``prepare_for_execution``) and success/failure handling on its own
    restored job, against the stored hash with the lean fields applied."""
    ex, after_start = await _save_and_claim(conn, job)
    rqjob = Job.fetch(job.id, connection=sync_conn, serializer=job.serializer)
    with mock.patch('rq.job.now', lambda: START), sync_conn.pipeline() as pipe:
        rqjob.prepare_for_execution(WORKER, pipeline=pipe)
        pipe.execute()
    claimed = lean.decode(job.id, await conn.hgetall(keys.job(job.id)))
    assert sync_conn.hgetall(keys.job(job.id)) == after_start
    rqjob.ended_at, rqjob.last_heartbeat = ENDED, ENDED
    with sync_conn.pipeline() as pipe:
        if kind == 'success':  # the job's save; a result_ttl=0 job is deleted afterwards
            rqjob._status = JobStatus.FINISHED
            rqjob._handle_success(rqjob.get_result_ttl(500), pipeline=pipe, worker_name=WORKER)
            expected = after_start | lean.encode_success(ENDED)
        else:
            rqjob.set_status(JobStatus.FAILED, pipeline=pipe)
            rqjob._handle_failure(EXC, pipeline=pipe, worker_name=WORKER)
            expected = {} if claimed.failure_ttl == 0 else after_start | lean.encode_failure(ENDED, ENDED)
        pipe.execute()
    assert sync_conn.hgetall(keys.job(job.id)) == expected


@REDIS
@given(jobs(), st.sampled_from(['success', 'failure', 'stopped']), st.sampled_from(['rq', 'worker']))
async def test_result_entry_equals_the_current_path(conn: Redis, job: Job, kind: str, path: str) -> None:
    ex, _ = await _save_and_claim(conn, job)
    claimed = lean.decode(job.id, await conn.hgetall(keys.job(job.id)))
    await _outcome(conn, kind, ex, path)
    entries = await conn.xrange(keys.results(job.id))
    if not entries:  # no Result: an exception retry, kept for 0 s (rq's EXPIRE 0 removes it too)
        if kind == 'success':
            assert claimed.get_result_ttl(500) == 0
        else:
            assert claimed.failure_ttl == 0 or (kind == 'failure' and claimed.should_retry)
        return
    serializer = serializer_of(job)
    created = datetime.fromtimestamp(ex.created_at, tz=timezone.utc)
    common: dict[str, Any] = {'serializer': serializer, 'worker_name': WORKER, 'execution_id': ex.id}
    if kind == 'success':
        entry = lean.encode_result(
            Result.Type.SUCCESSFUL,
            return_value={'r': 'é'},
            execution_started_at=created,
            execution_ended_at=ENDED,
            **common,
        )
    else:
        entry = lean.encode_result(
            Result.Type.FAILED,
            exc_string=EXC,
            execution_started_at=created,
            execution_ended_at=None if kind == 'stopped' else ENDED,
            **common,
        )
    assert entries[-1][1] == {k.encode(): codec.encode(v) for k, v in entry.items()}


def test_result_entry_placeholder_for_unserializable_values() -> None:
    """``Result.serialize``'s fallback when the value cannot be serialized."""
    entry = lean.encode_result(Result.Type.SUCCESSFUL, serializer=JSONSerializer, return_value=object())
    rq_result = Result.__new__(Result)
    rq_result.__dict__.update(
        type=Result.Type.SUCCESSFUL,
        return_value=object(),
        exc_string=None,
        worker_name='',
        serializer=JSONSerializer,
        execution_id=None,
        execution_started_at=None,
        execution_ended_at=None,
    )
    assert entry == rq_result.serialize()


def test_micro_benchmark_runs() -> None:
    """``benchmarks/lean_micro.py --quick`` runs (its figures are not asserted: never wall-clock)."""
    script = Path(__file__).resolve().parents[2] / 'benchmarks' / 'lean_micro.py'
    done = subprocess.run([sys.executable, str(script), '--quick'], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    steps = [line.rsplit(None, 3)[0].strip() for line in done.stdout.splitlines() if line.endswith('x')]
    assert steps == ['decode', 'decode + call', 'success', 'decode + success'] * 2, done.stdout
