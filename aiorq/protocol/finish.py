"""Finishing an execution (rq-protocol §4.9–4.14): success, failure, retries now or later, stop,
repeat, a returned ``Retry``. Each outcome is one guarded write. On the lean path (most jobs) it
is built from the claimed record with ``lean``'s encoders: exactly the fields rq changes; where
``lean``'s rule says rq's objects are needed, on a copy of rq's job (``to_dict()``)."""

from __future__ import annotations

import copy
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import WatchError
from rq.defaults import DEFAULT_FAILURE_TTL
from rq.job import Job as RQJob
from rq.job import JobStatus, Retry
from rq.results import Result
from rq.utils import current_timestamp

from . import dependents, keys, lean, ratelimit
from .batch import ALREADY_APPLIED, APPLIED, Batch, BatchRunner
from .codec import exc_string_payload, save
from .defaults import FAILURE_TTL, job_timeout
from .dequeue import Started
from .enqueue import buffer_enqueue, buffer_schedule_in
from .jobs import Deletion, buffer_execution_records_delete
from .lean import stamp
from .outcomes import (
    buffer_failed_registry_add,
    buffer_job_cleanup,
    buffer_key_ttl,
    buffer_result,
    buffer_result_entry,
    buffer_retry,
    buffer_retry_after,
    check_result_size,
    failure_ttl,
    read_cleanup,
)

logger = logging.getLogger('aiorq.protocol')


def buffer_execution_cleanup(sink: Any, worker_name: str, ex: Started) -> None:
    buffer_execution_records_delete(sink, ex.job_id, ex.id, ex.queue, worker_name)


@functools.lru_cache(maxsize=64)
def _worker_keys(worker_name: str) -> tuple[str, str]:
    """The worker's hash and executions index, kept per name: every outcome names both."""
    return keys.worker(worker_name), keys.worker_executions(worker_name)


def _counters(
    sink: Any, worker_name: str, success: bool, started_at: datetime | None, ended_at: datetime | None
) -> None:
    field_name = 'successful_job_count' if success else 'failed_job_count'
    worker_key = _worker_keys(worker_name)[0]
    sink.hincrby(worker_key, field_name, 1)
    if started_at and ended_at:
        sink.hincrbyfloat(worker_key, 'total_working_time', (ended_at - started_at).total_seconds())


def _stamped(job: RQJob, ex: Started) -> RQJob:
    """rq's job with the end times the runner stamped on the execution (rq's path)."""
    job.ended_at = ex.ended_at
    if ex.last_heartbeat is not None:
        job.last_heartbeat = ex.last_heartbeat
    return job


def buffer_repeat(sink: Any, job: RQJob) -> None:
    """``Repeat.schedule`` (3.0: consume the interval list from the front)."""
    interval = 0
    if job.repeat_intervals:
        interval = job.repeat_intervals[0]
        if len(job.repeat_intervals) > 1:
            job.repeat_intervals = job.repeat_intervals[1:]
    assert job.repeats_left
    job.repeats_left -= 1
    save(sink, job)
    if interval == 0:
        buffer_enqueue(sink, job, job.origin, int(job_timeout(job.timeout)), False)
    else:
        buffer_schedule_in(sink, job, interval)


def plan(job: RQJob) -> RQJob:
    """A copy of the job to build an outcome on. Builders change the copy (status, retries left,
    repeats…); the caller's job takes its values only once the outcome committed, so building
    the same outcome again after an outage writes the same values."""
    return copy.copy(job)


def adopt(job: RQJob, planned: RQJob) -> None:
    """The committed outcome becomes what the caller's job object says."""
    job.__dict__.update(planned.__dict__)


@functools.lru_cache(maxsize=1024)
def _registry_key(kind: str, queue: str) -> str:
    """``keys.registry`` kept per queue: every outcome names two registries."""
    return keys.registry(kind, queue)


def _timestamp() -> int:
    """``rq.utils.current_timestamp()`` (whole UTC seconds), without its ``utctimetuple``."""
    return int(time.time())


def _guard(batch: Batch, worker_name: str, ex: Started, ended_at: datetime | bytes | None, deleted: bool) -> int:
    """Run only while this execution owns the job (its started-registry member); if it does not,
    the probes tell an earlier, committed attempt of this same outcome (its reply lost in an
    outage) from an outcome written by someone else: the execution's index member is gone, and
    the job hash holds this outcome's ``ended_at`` (or is gone, for a deleting outcome).
    Returns the guard's number (what the batch returns when another process owns the job).
    ``ended_at`` may be given as its stored text (``lean.stamp``)."""
    member = ex.member
    owned = batch.guard_member(_registry_key('started', ex.queue), member)
    batch.probe_not_member(_worker_keys(worker_name)[1], member)
    if deleted:
        batch.probe_missing(keys.job(ex.job_id))
    elif ended_at is not None:
        batch.probe_field(keys.job(ex.job_id), 'ended_at', ended_at if isinstance(ended_at, bytes) else stamp(ended_at))
    return owned


async def _commit(conn: Redis, batch: Batch, worker_name: str, ex: Started) -> bool:
    """Run an outcome batch behind :func:`_guard`. When another process owns the job now
    (stopped, declared abandoned, canceled) only the execution records are removed."""
    if await batch.run(conn) in (APPLIED, ALREADY_APPLIED):
        return True
    return await _superseded(conn, worker_name, ex)


async def _superseded(conn: Redis, worker_name: str, ex: Started) -> bool:
    logger.warning('Job %s: its execution %s ended elsewhere; outcome not recorded', ex.job_id, ex.id)
    cleanup = Batch()
    buffer_execution_cleanup(cleanup, worker_name, ex)
    await cleanup.run(conn)
    return False


async def finish_success(
    conn: Redis,
    worker_name: str,
    ex: Started,
    return_value: Any,
    default_result_ttl: int,
    serializer: Any = None,
    run: BatchRunner | None = None,
    max_result_size: int | None = None,
) -> bool:
    """§4.9 (with §4.11 phase A inside, §4.13 repeats). ``False`` when the outcome was superseded;
    ``ResultTooLargeError`` (nothing sent) when the encoded result is over ``max_result_size``.
    The lean path (:func:`lean_success`) unless the job needs rq's (the rule in ``lean``, a
    ``result_ttl`` of 0, dependents)."""
    record = ex.record
    if not record.fallback and record.get_result_ttl(default_result_ttl) != 0:
        batch, owned, dependents_guard = lean_success(
            worker_name, ex, return_value, default_result_ttl, max_result_size
        )
        outcome = await (run(batch) if run is not None else batch.run(conn))
        if outcome in (APPLIED, ALREADY_APPLIED):
            if record.has_rate_limit:
                await _release_lean(conn, record)
            return True
        if outcome == owned:
            return await _superseded(conn, worker_name, ex)
        assert outcome == dependents_guard
        return await rq_success(conn, worker_name, ex, return_value, default_result_ttl, serializer, dependents=True)
    return await rq_success(
        conn, worker_name, ex, return_value, default_result_ttl, serializer, run=run, max_result_size=max_result_size
    )


def lean_success(
    worker_name: str, ex: Started, return_value: Any, default_result_ttl: int, max_size: int | None = None
) -> tuple[Batch, int, int]:
    """The success transaction of a job on the lean path, guarded (owned, no dependents): the
    counters, exactly the job-hash fields rq's save changes, the Result entry, the finished
    registry, the keys' TTL and the execution's records. Returns the batch and its two guards."""
    record = ex.record
    ended_at = ex.ended_at
    assert ended_at is not None
    job_id = record.id
    job_key = keys.job(job_id)
    result_ttl = record.get_result_ttl(default_result_ttl)
    ended = stamp(ended_at)  # once: the probe and the hash write the same text
    batch = Batch()
    owned = _guard(batch, worker_name, ex, ended, deleted=False)
    dependents_guard = batch.guard_scard(keys.dependents(job_id), 0)
    _counters(batch, worker_name, True, ex.started_at, ended_at)
    # The runner stamps both with one reading: the same text, made once.
    beat = ex.last_heartbeat
    batch.hset(job_key, mapping=lean.encode_success(ended, None if beat == ended_at else beat))
    entry = lean.encode_result(
        Result.Type.SUCCESSFUL,
        serializer=ex.serializer,  # the job's, as it was claimed
        worker_name=worker_name,
        return_value=return_value,
        execution_id=ex.id,
        execution_started_at=_dt(ex.created_at),
        execution_ended_at=ended_at,
    )
    check_result_size(job_id, entry, max_size)
    buffer_result_entry(batch, job_id, entry, result_ttl)
    score: Any = '+inf' if result_ttl == -1 else _timestamp() + result_ttl
    batch.zadd(_registry_key('finished', record.origin), {job_id: score})
    if result_ttl > 0:  # ``Job.cleanup(ttl)`` but for the dependents set: guard 2 holds only if it does not exist
        batch.expire(job_key, result_ttl)
        if record.dependency_ids:
            # Only a job enqueued with dependencies has this set (rq writes both together; a
            # hash with the legacy lone ``dependency_id`` takes rq's path): EXPIRE of a key
            # that does not exist would change nothing.
            batch.expire(keys.dependencies(job_id), result_ttl)
    buffer_execution_cleanup(batch, worker_name, ex)
    return batch, owned, dependents_guard


async def _release_lean(conn: Redis, record: lean.JobRecord) -> None:
    """The rate limiter's slot of a job whose outcome committed on the lean path."""
    if record.has_rate_limit:
        assert record.rate_limit_key
        await ratelimit.release_owned(conn, record.rate_limit_key, record.id)


async def rq_success(
    conn: Redis,
    worker_name: str,
    ex: Started,
    return_value: Any,
    default_result_ttl: int,
    serializer: Any,
    *,
    run: BatchRunner | None = None,
    max_result_size: int | None = None,
    dependents: bool = False,
) -> bool:
    """The success transaction on rq's job: a copy of it planned, ``to_dict()`` saved.
    ``dependents``: the lean path found some, straight to their path."""
    current = _stamped(ex.job, ex)
    result_ttl = current.get_result_ttl(default_result_ttl)
    repeating = current.repeats_left is not None and current.repeats_left > 0

    async def fill(sink: Any, job: RQJob) -> None:
        """Everything the success transaction writes, after any dependents phase A."""
        repeats = job.repeats_left is not None and job.repeats_left > 0
        deletion = None if repeats else await read_cleanup(conn, job, result_ttl)
        _buffer_success(sink, job, ex, worker_name, return_value, result_ttl, max_result_size, deletion)

    def planned() -> RQJob:
        job = plan(current)
        job._result = return_value
        return job

    if not dependents:
        # Fast path, one script call: valid only while the job has no dependents (guard 2); rq's
        # WATCH-based path below handles the others.
        job = planned()
        batch = Batch()
        owned = _guard(batch, worker_name, ex, job.ended_at, deleted=result_ttl == 0 and not repeating)
        batch.guard_scard(keys.dependents(current.id), 0)
        await fill(batch, job)
        outcome = await (run(batch) if run is not None else batch.run(conn))
        if outcome in (APPLIED, ALREADY_APPLIED):
            adopt(current, job)
            await ratelimit.release_slot(conn, current)
            return True
        if outcome == owned:
            return await _superseded(conn, worker_name, ex)
    # A dependent exists (or appeared): rq's WATCH on the dependents set, with phase A inside.
    return await _finish_success_with_dependents(conn, worker_name, ex, planned, fill, serializer)


def _buffer_success(
    sink: Any,
    job: RQJob,
    ex: Started,
    worker_name: str,
    return_value: Any,
    result_ttl: int,
    max_result_size: int | None,
    deletion: Deletion | None,
) -> None:
    """The success transaction's writes on the planned ``job``: counters, the finished records
    (unless ``result_ttl`` is 0), the repeat or the clean-up, and the execution's records."""
    _counters(sink, worker_name, True, job.started_at, job.ended_at)
    if result_ttl != 0:
        job._status = JobStatus.FINISHED
        # rq sends HSET status, then the whole mapping (status included); the mapping's
        # write alone leaves the same hash, and it always carries the changed status.
        save(sink, job, include_meta=False, include_result=False)
        _execution_result(
            sink,
            job,
            ex,
            worker_name,
            Result.Type.SUCCESSFUL,
            result_ttl,
            return_value=return_value,
            max_size=max_result_size,
        )
        score: Any = '+inf' if result_ttl == -1 else current_timestamp() + result_ttl
        sink.zadd(keys.registry('finished', job.origin), {job.id: score})
    if job.repeats_left is not None and job.repeats_left > 0:
        buffer_repeat(sink, job)
    else:
        buffer_job_cleanup(sink, job, result_ttl, deletion)
        job._status = JobStatus.FINISHED
    buffer_execution_cleanup(sink, worker_name, ex)


async def _finish_success_with_dependents(
    conn: Redis,
    worker_name: str,
    ex: Started,
    planned: Callable[[], RQJob],
    fill: Callable[[Any, RQJob], Awaitable[None]],
    serializer: Any,
) -> bool:
    """The success transaction of a job with dependents: rq's WATCH on its dependents set, the
    dependents' phase A and ``fill``'s writes in one MULTI (``planned()`` makes a fresh plan)."""
    moved: dict[str, list[str]] = {}
    async with conn.pipeline(transaction=True) as pipe:
        while True:
            job = planned()
            try:
                await pipe.watch(keys.dependents(ex.job_id), keys.execution(job.id, ex.id))
                if await pipe.zscore(keys.registry('started', ex.queue), ex.member) is None:
                    await pipe.reset()
                    return await _superseded(conn, worker_name, ex)
                moved = await dependents.move_dependents_to_ready(conn, job, pipe=pipe, serializer=serializer)
                if not pipe.explicit_transaction:
                    pipe.multi()
                await fill(pipe, job)
                await pipe.execute()
                break
            except WatchError:
                continue
    adopt(ex.job, job)
    await dependents.enqueue_ready_by_queue(conn, moved, serializer=serializer)
    await ratelimit.release_slot(conn, ex.job)
    return True


def _execution_result(
    sink: Any, job: RQJob, ex: Started | None, worker_name: str, type_: Result.Type, ttl: int | None, **values: Any
) -> None:
    """The Result entry of an execution's outcome, with the execution's id and times."""
    buffer_result(
        sink,
        job,
        type_,
        ttl,
        worker_name=worker_name,
        execution_id=ex.id if ex else None,
        execution_started_at=_dt(ex.created_at) if ex else None,
        execution_ended_at=job.ended_at,
        **values,
    )


def _dt(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=timezone.utc)


async def finish_failure(
    conn: Redis,
    worker_name: str,
    original: RQJob | None,
    ex: Started | None,
    exc_string: str,
    *,
    stopped: bool = False,
    record: bool = True,
) -> bool:
    """§4.10 / §4.12 exception retries / §4.14 stopped; ``ex=None`` for a job that never
    started (stuck in the intermediate list). ``record=False`` is
    ``--disable-default-exception-handler`` (no registry, hash save or Result). ``original``
    None: the execution's job, on the lean path (:func:`lean_failure`) unless it needs rq's
    (the rule in ``lean``, a ``failure_ttl`` of 0 that deletes it)."""
    if original is None:
        assert ex is not None
        if not ex.record.fallback and not (record and ex.record.failure_ttl == 0):
            return await _finish_lean_failure(conn, worker_name, ex, exc_string, stopped, record)
        original = ex.job
    if ex is not None:
        _stamped(original, ex)
    job = plan(original)
    retry = job.should_retry and not stopped
    deletion = await _failure_reads(conn, job, stopped, record)
    batch = _failure_batch(worker_name, job, ex, exc_string, stopped, record, deletion, check_dependents=True)
    with_dependents = ex is None
    if ex is not None:
        outcome = await batch.run(conn)
        if outcome == batch.dependents_guard:  # none written: again, then rq's release of dependents
            job = plan(original)
            deletion = await _failure_reads(conn, job, stopped, record)
            batch = _failure_batch(worker_name, job, ex, exc_string, stopped, record, deletion, check_dependents=False)
            outcome = await batch.run(conn)
            with_dependents = True
        if outcome == ALREADY_APPLIED:  # an earlier attempt committed: its dependents may wait
            with_dependents = True
        elif outcome != APPLIED:
            return await _superseded(conn, worker_name, ex)
    else:
        await batch.run(conn)
    adopt(original, job)
    if not retry and with_dependents:
        try:
            await dependents.enqueue_dependents(conn, job, serializer=job.serializer)
        except Exception:
            logger.exception('Job %s: releasing dependents failed; left for maintenance', job.id)
    await ratelimit.release_slot(conn, job)
    return True


class _FailureBatch(Batch):
    dependents_guard: int | None = None  # the guard "no dependents", when there is one


async def _failure_reads(conn: Redis, job: RQJob, stopped: bool, record: bool) -> Deletion | None:
    """What rq's failure handling reads before it writes: the job's deletion, when a recorded
    failure with no retry left and a ``failure_ttl`` of 0 deletes it."""
    retry = job.should_retry and not stopped
    return await read_cleanup(conn, job, failure_ttl(job)) if record and not retry else None


def _failure_batch(
    worker_name: str,
    job: RQJob,
    ex: Started | None,
    exc_string: str,
    stopped: bool,
    record: bool,
    deletion: Deletion | None,
    check_dependents: bool,
) -> _FailureBatch:
    """rq's failure writes on the planned ``job`` (``deletion``: :func:`_failure_reads`); for an
    execution, guarded, and with ``check_dependents`` also on the job having no dependents."""
    retry = job.should_retry and not stopped
    deleted = bool(record and not retry and job.failure_ttl == 0)
    batch = _FailureBatch()
    if ex is not None:
        _guard(batch, worker_name, ex, job.ended_at, deleted)
        if check_dependents and not retry:
            batch.dependents_guard = batch.guard_scard(keys.dependents(job.id), 0)
        buffer_execution_cleanup(batch, worker_name, ex)
    if stopped:
        job._status = JobStatus.STOPPED
        batch.hset(keys.job(job.id), 'status', JobStatus.STOPPED.value)
    elif not retry:
        job._status = JobStatus.FAILED
        batch.hset(keys.job(job.id), 'status', JobStatus.FAILED.value)
    if record and not retry:
        buffer_failed_registry_add(batch, job, exc_string, deletion)
        _execution_result(batch, job, ex, worker_name, Result.Type.FAILED, job.failure_ttl, exc_string=exc_string)
    _counters(batch, worker_name, False, job.started_at, job.ended_at)
    if retry:
        buffer_retry(batch, job)
    return batch


async def _finish_lean_failure(
    conn: Redis, worker_name: str, ex: Started, exc_string: str, stopped: bool, record: bool
) -> bool:
    batch, owned, dependents_guard = lean_failure(worker_name, ex, exc_string, stopped=stopped, record=record)
    outcome = await batch.run(conn)
    if outcome == dependents_guard:  # nothing written: rq's path, which releases the dependents
        return await finish_failure(conn, worker_name, ex.job, ex, exc_string, stopped=stopped, record=record)
    if outcome == owned:
        return await _superseded(conn, worker_name, ex)
    await _release_lean(conn, ex.record)
    return True


def lean_failure(
    worker_name: str, ex: Started, exc_string: str, *, stopped: bool = False, record: bool = True
) -> tuple[Batch, int, int]:
    """The failure (or stop) transaction of a job on the lean path, guarded (owned, no
    dependents): exactly the job-hash fields rq's failure handling changes, the failed registry,
    the keys' TTL and the Result entry (unless ``record`` is False), the counters and the
    execution's records. Returns the batch and its two guards."""
    job = ex.record
    batch = Batch()
    owned = _guard(batch, worker_name, ex, ex.ended_at, deleted=False)
    dependents_guard = batch.guard_scard(keys.dependents(job.id), 0)
    buffer_execution_cleanup(batch, worker_name, ex)
    status = JobStatus.STOPPED if stopped else JobStatus.FAILED
    fields = lean.encode_failure(ex.ended_at, ex.last_heartbeat, status=status, record=record)
    batch.hset(keys.job(job.id), mapping=fields)
    if record:
        ttl = job.failure_ttl if job.failure_ttl is not None else DEFAULT_FAILURE_TTL
        buffer_key_ttl(batch, job.id, ttl)
        batch.zadd(keys.registry('failed', job.origin), {job.id: ttl if ttl < 0 else current_timestamp() + ttl})
        entry = lean.encode_result(
            Result.Type.FAILED,
            worker_name=worker_name,
            exc_string=exc_string,
            execution_id=ex.id,
            execution_started_at=_dt(ex.created_at),
            execution_ended_at=ex.ended_at,
        )
        buffer_result_entry(batch, job.id, entry, job.failure_ttl)
    _counters(batch, worker_name, False, ex.started_at, ex.ended_at)
    return batch, owned, dependents_guard


async def finish_returned_retry(conn: Redis, worker_name: str, ex: Started, retry: Retry) -> tuple[bool, bool]:
    """§4.12 return-based retry. Returns (committed, exhausted)."""
    job = plan(_stamped(ex.job, ex))
    job._result = retry  # rq's plain saves after a run carry the legacy ``result`` field
    batch = Batch()
    exhausted = bool(job.number_of_retries and job.number_of_retries >= retry.max)
    deletion = await read_cleanup(conn, job, failure_ttl(job)) if exhausted else None
    _guard(batch, worker_name, ex, job.ended_at, deleted=exhausted and job.failure_ttl == 0)
    if exhausted:
        job._status = JobStatus.FAILED
        batch.hset(keys.job(job.id), 'status', JobStatus.FAILED.value)
        buffer_execution_cleanup(batch, worker_name, ex)
        buffer_failed_registry_add(batch, job, '', deletion)
        _execution_result(
            batch, job, ex, worker_name, Result.Type.MAX_RETRIES_EXCEEDED, job.failure_ttl, return_value=retry
        )
        _counters(batch, worker_name, False, job.started_at, job.ended_at)
    else:
        _counters(batch, worker_name, False, job.started_at, job.ended_at)
        _execution_result(batch, job, ex, worker_name, Result.Type.RETRIED, job.failure_ttl, return_value=retry)
        interval = Retry.get_interval(job.number_of_retries or 0, retry.intervals)
        job.number_of_retries = 1 if not job.number_of_retries else job.number_of_retries + 1
        job.enqueue_at_front_on_retry = job.enqueue_at_front_on_retry or retry.enqueue_at_front
        buffer_retry_after(batch, job, interval)
        buffer_execution_cleanup(batch, worker_name, ex)
    if not await _commit(conn, batch, worker_name, ex):
        return False, exhausted
    adopt(ex.job, job)
    if exhausted:
        await dependents.enqueue_dependents(conn, job, serializer=job.serializer)
    await ratelimit.release_slot(conn, job)
    return True, exhausted


async def fail_unstarted(
    conn: Redis, worker_name: str, queue_name: str, job_id: str, exec_id: str, exc_string: str
) -> None:
    """A started job whose hash cannot be decoded: its execution records go, and it is failed
    (failed registry, Result, counters) without rq's codec, so the id is not lost."""
    batch = Batch()
    buffer_execution_records_delete(batch, job_id, exec_id, queue_name, worker_name)
    batch.hset(keys.job(job_id), 'status', JobStatus.FAILED.value)
    batch.zadd(keys.registry('failed', queue_name), {job_id: current_timestamp() + FAILURE_TTL})
    batch.expire(keys.job(job_id), FAILURE_TTL)
    batch.xadd(
        keys.results(job_id),
        {'type': Result.Type.FAILED.value, 'worker_name': worker_name, 'exc_string': exc_string_payload(exc_string)},
        maxlen=10,
    )
    batch.hincrby(keys.worker(worker_name), 'failed_job_count', 1)
    await batch.run(conn)
