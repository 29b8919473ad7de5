"""Producer-side transitions: enqueue, defer, schedule, unique and rate-limited enqueue (rq-protocol §4.1–4.5, §9.2)."""

from __future__ import annotations

import calendar
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import WatchError
from rq.exceptions import DuplicateJobError
from rq.job import Job as RQJob
from rq.job import JobStatus
from rq.scripts import _build_hset_args
from rq.utils import current_timestamp, now, utcformat

from . import keys, lean_enqueue, scripts, wire
from .codec import checked_mapping, mapping, parse_status, save

Pipe = Pipeline
# Where buffered writes go: a transactional pipeline or a :class:`aiorq.protocol.batch.Batch`
# (both offer the same command methods).
Sink = Any


def _check(job: RQJob, pipeline: Pipe | None, unique: bool) -> None:
    # The same validations, in the same order, as rq.Queue.enqueue_job.
    if unique and not job._id:
        raise ValueError('unique=True requires an explicit job_id')
    if unique and job._dependency_ids:
        raise ValueError('unique=True is not supported with job dependencies')
    if unique and job.has_rate_limit:
        raise ValueError('unique=True is not supported with rate-limited jobs')
    if job.has_rate_limit and pipeline is not None:
        raise ValueError('rate-limited jobs cannot be enqueued with a pipeline')


def buffer_cleanup(pipe: Sink, job: RQJob, ttl: int | None) -> None:
    """``Job.cleanup(ttl)`` for a positive ttl: expire the hash and both dependency sets."""
    if ttl is not None and ttl > 0:
        pipe.expire(keys.job(job.id), ttl)
        pipe.expire(keys.dependents(job.id), ttl)
        pipe.expire(keys.dependencies(job.id), ttl)


def buffer_persist(pipe: Sink, job: RQJob, status: JobStatus) -> None:
    """``Queue._persist_job``: status, full mapping, ttl."""
    job._status = status
    pipe.hset(keys.job(job.id), 'status', status.value)
    save(pipe, job)
    buffer_cleanup(pipe, job, job.ttl)


def buffer_schedule_in(sink: Sink, job: RQJob, seconds: int) -> None:
    """``Queue.schedule_job`` at now + ``seconds`` (retries with an interval, delayed repeats)."""
    sink.sadd(keys.QUEUES, keys.queue(job.origin))
    buffer_persist(sink, job, JobStatus.SCHEDULED)
    score = schedule_score(now() + timedelta(seconds=seconds))
    sink.zadd(keys.registry('scheduled', job.origin), {job.id: score})
    buffer_wakeup(sink, job.origin, score)


def buffer_wakeup(sink: Sink, queue_name: str, score: int) -> None:
    """Tell aiorq schedulers listening on this queue that a job is due at ``score`` (a hint
    that leaves nothing in Redis; the scheduler also polls, as rq's does)."""
    sink.publish(keys.scheduler_wakeup(queue_name), score)


def prepare_for_queue(job: RQJob, queue_name: str, default_timeout: int) -> None:
    job.origin = queue_name
    job.enqueued_at = now()
    if job.timeout is None:
        job.timeout = default_timeout
    job._status = JobStatus.QUEUED


def buffer_enqueue(pipe: Sink, job: RQJob, queue_name: str, default_timeout: int, at_front: bool) -> None:
    """4.1 step 3 (also used by the ready drain, retries and the scheduler)."""
    was_deferred = job._status == JobStatus.DEFERRED
    prepare_for_queue(job, queue_name, default_timeout)
    if was_deferred:
        pipe.zrem(keys.registry('deferred', queue_name), job.id)
    buffer_persist(pipe, job, JobStatus.QUEUED)
    if at_front:
        pipe.lpush(keys.queue(queue_name), job.id)
    else:
        pipe.rpush(keys.queue(queue_name), job.id)


def is_plain(job: RQJob) -> bool:
    """A job :func:`enqueue_plain` can write: no dependency, no rate limit."""
    return not job._dependency_ids and not job.has_rate_limit


def _fields(job: RQJob) -> list[Any]:
    """The job's HSET field/value items, ``status`` first (where rq's separate HSET puts it);
    by the lean encoder when it writes what ``to_dict()`` would (``lean_enqueue.encodable``)."""
    if lean_enqueue.encodable(job):
        return _lean(lean_enqueue.fields, job)
    fields = checked_mapping(job)
    items: list[Any] = ['status', fields['status']]
    for name, value in fields.items():
        if name != 'status':
            items.append(name)
            items.append(value)
    return items


def _lean(encode: Callable[[RQJob], list[Any]], job: RQJob) -> list[Any]:
    """A lean encoder's output, failing as :func:`checked_mapping` fails."""
    try:
        return encode(job)
    except Exception as e:
        raise TypeError(f'Job for {job.func_name} cannot be serialized with {job.serializer!r}: {e}') from e


def _add_lean(ks: list[str], args: list[Any], job: RQJob, at_front: bool) -> None:
    """A job's keys and arguments for ``lean_enqueue.ENQUEUE_MANY_SCRIPT``."""
    job_id = job.id
    ttl = job.ttl or 0
    args += [job_id, 'L' if at_front else 'R', ttl, *_lean(lean_enqueue.template, job)]
    ks.append(keys.job(job_id))
    if ttl > 0:
        ks += [keys.dependents(job_id), keys.dependencies(job_id)]


async def enqueue_many_plain(
    conn: Redis, jobs_and_fronts: Sequence[tuple[RQJob, bool]], queue_name: str, default_timeout: int
) -> list[RQJob]:
    """4.5 for jobs without dependencies or rate limits: rq's one MULTI as one atomic call.
    Every job is serialized before anything is sent."""
    queue_key = keys.queue(queue_name)
    ks: list[str] = [keys.QUEUES, queue_key]
    args: list[Any] = [queue_key]
    for job, _ in jobs_and_fronts:
        prepare_for_queue(job, queue_name, default_timeout)
    if all(lean_enqueue.encodable(job) for job, _ in jobs_and_fronts):
        for job, at_front in jobs_and_fronts:
            _add_lean(ks, args, job, at_front)
        await wire.run_script(conn, lean_enqueue.ENQUEUE_MANY_SCRIPT, ks, args)
        return [job for job, _ in jobs_and_fronts]
    for job, at_front in jobs_and_fronts:
        items = _fields(job)
        job_id = job.id
        ks += [keys.job(job_id), keys.dependents(job_id), keys.dependencies(job_id)]
        args += [job_id, 'L' if at_front else 'R', job.ttl or 0, len(items), *items]
    await wire.run_script(conn, scripts.ENQUEUE_MANY_SCRIPT, ks, args)
    return [job for job, _ in jobs_and_fronts]


async def enqueue_plain(conn: Redis, job: RQJob, queue_name: str, default_timeout: int, at_front: bool) -> RQJob:
    """4.1 for a job with no dependency, rate limit or uniqueness, in one round trip.

    Serialization happens before anything is sent, so a bad argument writes nothing.
    """
    prepare_for_queue(job, queue_name, default_timeout)
    args: list[Any] = [job.id, keys.queue(queue_name), 'L' if at_front else 'R', job.ttl or 0, *_fields(job)]
    job_id = job.id
    await wire.run_script(
        conn,
        scripts.ENQUEUE_SCRIPT,
        [keys.QUEUES, keys.job(job_id), keys.queue(queue_name), keys.dependents(job_id), keys.dependencies(job_id)],
        args,
    )
    return job


async def add_queue(conn: Redis, queue_name: str, pipeline: Pipe | None = None) -> None:
    if pipeline is not None:
        pipeline.sadd(keys.QUEUES, keys.queue(queue_name))
        return
    async with conn.pipeline(transaction=True) as pipe:
        pipe.sadd(keys.QUEUES, keys.queue(queue_name))
        await pipe.execute()


async def _dependency_statuses(conn: Redis, dependency_ids: Sequence[str]) -> list[JobStatus | None]:
    async with conn.pipeline(transaction=True) as pipe:
        for dep_id in dependency_ids:
            pipe.hget(keys.job(dep_id), 'status')
        raw = await pipe.execute()
    return [parse_status(r) for r in raw]


def _buffer_register_dependency(pipe: Pipe, job: RQJob) -> None:
    pipe.zadd(keys.registry('deferred', job.origin), {job.id: current_timestamp()})
    for dep_id in job._dependency_ids:
        pipe.sadd(keys.dependents(dep_id), job.id)
        pipe.sadd(keys.dependencies(job.id), dep_id)


async def setup_dependencies(conn: Redis, job: RQJob, pipeline: Pipe | None = None) -> None:
    """4.2: defer the job under WATCH if any existing dependency is unmet."""
    if not job._dependency_ids:
        if pipeline is not None and not pipeline.explicit_transaction:
            pipeline.multi()
        return
    orig_status = job._status
    pipe = pipeline if pipeline is not None else conn.pipeline(transaction=True)
    try:
        while True:
            try:
                await pipe.watch(keys.dependencies(job.id))
                await pipe.watch(*[keys.job(d) for d in job._dependency_ids])
                statuses = await _dependency_statuses(conn, job._dependency_ids)
                pipe.multi()
                met = {JobStatus.FINISHED}
                if job.allow_dependency_failures:
                    met.add(JobStatus.FAILED)
                if any(s is not None and s not in met for s in statuses):
                    job._status = JobStatus.DEFERRED
                    pipe.hset(keys.job(job.id), 'status', JobStatus.DEFERRED.value)
                    _buffer_register_dependency(pipe, job)
                    pipe.hset(keys.job(job.id), mapping=mapping(job))
                    buffer_cleanup(pipe, job, job.ttl)
                    if pipeline is None:
                        await pipe.execute()
                return
            except WatchError:
                if pipeline is not None:
                    raise
                job._status = orig_status
    finally:
        if pipeline is None:
            await pipe.reset()


async def enqueue_job(
    conn: Redis,
    job: RQJob,
    queue_name: str,
    default_timeout: int,
    *,
    at_front: bool = False,
    pipeline: Pipe | None = None,
    unique: bool = False,
) -> RQJob:
    """``rq.Queue.enqueue_job``: dependencies, ``rq:queues``, then push (or defer / rate-limit)."""
    _check(job, pipeline, unique)
    if pipeline is None and not unique and is_plain(job) and job._status != JobStatus.DEFERRED:
        return await enqueue_plain(conn, job, queue_name, default_timeout, at_front)
    job.origin = queue_name
    await setup_dependencies(conn, job, pipeline)
    await add_queue(conn, queue_name, pipeline)
    if job._status == JobStatus.DEFERRED:
        return job
    if job.has_rate_limit:
        return await enqueue_rate_limited(conn, job, queue_name, default_timeout, at_front=at_front)
    if unique:
        prepare_for_queue(job, queue_name, default_timeout)
        await _unique_enqueue(conn, job, queue_name, at_front)
        return job
    if pipeline is not None:
        buffer_enqueue(pipeline, job, queue_name, default_timeout, at_front)
        return job
    async with conn.pipeline(transaction=True) as pipe:
        buffer_enqueue(pipe, job, queue_name, default_timeout, at_front)
        await pipe.execute()
    return job


async def _unique_enqueue(conn: Redis, job: RQJob, queue_name: str, at_front: bool) -> None:
    ttl = job.ttl if job.ttl is not None else -1
    args = [job.id, 'L' if at_front else 'R', ttl, *_build_hset_args(job)]
    ok = await scripts.run(conn, scripts.UNIQUE_ENQUEUE_SCRIPT, [keys.job(job.id), keys.queue(queue_name)], args)
    if ok == 0:
        raise DuplicateJobError(f"Job with ID '{job.id}' already exists")


def schedule_score(when: datetime) -> int:
    """``ScheduledJobRegistry.schedule``: naive datetimes are local time on that date."""
    if not when.tzinfo:
        when = when.astimezone()
    return calendar.timegm(when.utctimetuple())


async def schedule_job(
    conn: Redis,
    job: RQJob,
    queue_name: str,
    when: datetime,
    *,
    pipeline: Pipe | None = None,
    unique: bool = False,
) -> RQJob:
    """4.3 (and the unique variant of 4.4)."""
    if unique and not job._id:
        raise ValueError('unique=True requires an explicit job_id')
    job.origin = queue_name
    registry_key = keys.registry('scheduled', queue_name)
    if unique:
        job._status = JobStatus.SCHEDULED
        ttl = job.ttl if job.ttl is not None else -1
        args = [job.id, ttl, schedule_score(when), keys.queue(queue_name), *_build_hset_args(job)]
        ok = await scripts.run(
            conn, scripts.UNIQUE_SCHEDULE_SCRIPT, [keys.job(job.id), registry_key, keys.QUEUES], args
        )
        if ok == 0:
            raise DuplicateJobError(f"Job with ID '{job.id}' already exists")
        await conn.publish(keys.scheduler_wakeup(queue_name), schedule_score(when))
        return job
    pipe = pipeline if pipeline is not None else conn.pipeline(transaction=True)
    pipe.sadd(keys.QUEUES, keys.queue(queue_name))
    buffer_persist(pipe, job, JobStatus.SCHEDULED)
    score = schedule_score(when)
    pipe.zadd(registry_key, {job.id: score})
    buffer_wakeup(pipe, queue_name, score)
    if pipeline is None:
        async with pipe:
            await pipe.execute()
    return job


def _acquire_args(concurrency: int, at: datetime) -> list[Any]:
    return [concurrency, current_timestamp(), utcformat(at), keys.QUEUE_PREFIX, keys.JOB_PREFIX]


def rl_keys(key: str) -> list[str]:
    return [keys.rl_allowed(key), keys.rl_waiting(key)]


async def enqueue_rate_limited(
    conn: Redis,
    job: RQJob,
    queue_name: str,
    default_timeout: int,
    *,
    at_front: bool = False,
    pipeline: Pipe | None = None,
) -> RQJob:
    """§9.2: save as ``rate_limited``, wait in the limiter, then fill free slots."""
    assert job.rate_limit_key and job.rate_limit_concurrency
    job.origin = queue_name
    if job.timeout is None:
        job.timeout = default_timeout
    job._status = JobStatus.RATE_LIMITED
    if at_front:
        job.enqueue_at_front = True
    key = job.rate_limit_key
    pipe = pipeline if pipeline is not None else conn.pipeline(transaction=True)
    pipe.sadd(keys.RL_KEYS, key)
    pipe.hset(keys.rl_config(key), 'concurrency', job.rate_limit_concurrency)
    pipe.hset(keys.job(job.id), mapping=mapping(job))
    buffer_cleanup(pipe, job, job.ttl)
    pipe.zadd(keys.rl_waiting(key), {job.id: current_timestamp()})
    if pipeline is not None:
        await scripts.queue_in(
            conn,
            pipe,
            scripts.ACQUIRE_AND_ENQUEUE_SCRIPT,
            rl_keys(key),
            _acquire_args(job.rate_limit_concurrency, now()),
        )
        return job
    async with pipe:
        await pipe.execute()
    enqueued_at = now()
    promoted = await scripts.run(
        conn, scripts.ACQUIRE_AND_ENQUEUE_SCRIPT, rl_keys(key), _acquire_args(job.rate_limit_concurrency, enqueued_at)
    )
    if job.id in {p.decode() if isinstance(p, bytes) else p for p in promoted}:
        job._status = JobStatus.QUEUED
        job.enqueued_at = enqueued_at
    return job


async def enqueue_many(
    conn: Redis,
    jobs_and_fronts: Sequence[tuple[RQJob, bool]],
    queue_name: str,
    default_timeout: int,
    *,
    pipeline: Pipe | None = None,
) -> list[RQJob]:
    """4.5: jobs without dependencies in one MULTI, then the dependent ones (created ``deferred``)."""
    if pipeline is None and jobs_and_fronts and all(is_plain(j) for j, _ in jobs_and_fronts):
        return await enqueue_many_plain(conn, jobs_and_fronts, queue_name, default_timeout)
    plain = [(j, f) for j, f in jobs_and_fronts if not j._dependency_ids]
    dependent = [(j, f) for j, f in jobs_and_fronts if j._dependency_ids]
    pipe = pipeline if pipeline is not None else conn.pipeline(transaction=True)
    try:
        pipe.sadd(keys.QUEUES, keys.queue(queue_name))
        for job, at_front in plain:
            buffer_enqueue(pipe, job, queue_name, default_timeout, at_front)
        if pipeline is None:
            await pipe.execute()
        met: list[RQJob] = []
        unmet: list[RQJob] = []
        if dependent:
            for job, _ in dependent:
                job.origin = queue_name
                pipe.hset(keys.job(job.id), mapping=mapping(job))
            if pipeline is None:
                await pipe.execute()
            met, unmet = await _register_dependents(conn, [j for j, _ in dependent], queue_name, pipe, pipeline)
            fronts = {j.id for j, f in dependent if f}
            for job in met:
                buffer_enqueue(pipe, job, queue_name, default_timeout, bool(job.enqueue_at_front) or job.id in fronts)
            for job in unmet:
                buffer_cleanup(pipe, job, job.ttl)
        if pipeline is None and dependent:
            await pipe.execute()
    finally:
        if pipeline is None:
            await pipe.reset()
    return [j for j, _ in plain] + unmet + met


async def _register_dependents(
    conn: Redis, dependent: list[RQJob], queue_name: str, pipe: Pipe, pipeline: Pipe | None
) -> tuple[list[RQJob], list[RQJob]]:
    """Register each dependent job's dependencies and check them; returns (met, unmet).

    Registering the dependency and checking it happen per job under WATCH, like rq's
    Dependency.get_jobs_with_met_dependencies; a user pipeline gets the same commands."""
    met: list[RQJob] = []
    unmet: list[RQJob] = []
    checker = conn.pipeline(transaction=True)
    try:
        for index, job in enumerate(dependent):
            while True:
                try:
                    await checker.watch(*[keys.job(d) for d in job._dependency_ids])
                    await checker.zadd(keys.registry('deferred', queue_name), {job.id: current_timestamp()})
                    for dep_id in job._dependency_ids:
                        await checker.sadd(keys.dependents(dep_id), job.id)
                        await checker.sadd(keys.dependencies(job.id), dep_id)
                    if await dependencies_are_met(conn, job, pipe=checker):
                        met.append(job)
                    else:
                        unmet.append(job)
                    checker.multi()
                    await checker.execute()
                except WatchError:
                    continue
                break
            if index == 0 and pipeline is not None:
                # rq checks on the caller's pipeline, whose first EXEC (after the first
                # dependent's check) sends all it buffered: later dependents see this batch.
                await pipe.execute()
    finally:
        await checker.reset()
    return met, unmet


async def dependencies_are_met(
    conn: Redis,
    job: RQJob,
    *,
    parent: RQJob | None = None,
    parent_status: JobStatus | None = None,
    exclude_job_id: str | None = None,
    pipe: Pipe | None = None,
) -> bool:
    """``Job.dependencies_are_met``: reads the dependency *set*, statuses on another connection.

    ``parent_status`` given means "use this cached status" (rq's ``refresh_job_status=False``);
    otherwise the parent's status is read live.
    """
    reader: Any = pipe if pipe is not None else conn
    if pipe is not None:
        await pipe.watch(*[keys.job(d) for d in job._dependency_ids])
    dependency_ids = {d.decode() for d in await reader.smembers(keys.dependencies(job.id))}
    if exclude_job_id:
        dependency_ids.discard(exclude_job_id)
        if parent is not None and parent.id == exclude_job_id:
            parent = None
    if parent is not None:
        dependency_ids.discard(parent.id)
        status = parent_status
        if status is None:
            status = parse_status(await conn.hget(keys.job(parent.id), 'status'))
        if status in (JobStatus.CANCELED, JobStatus.STOPPED):
            return False
        if status == JobStatus.FAILED and not job.allow_dependency_failures:
            return False
        if not dependency_ids:
            return True
    statuses = await _dependency_statuses(conn, sorted(dependency_ids))
    allowed = {JobStatus.FINISHED}
    if job.allow_dependency_failures:
        allowed.add(JobStatus.FAILED)
    return all(s in allowed for s in statuses if s is not None)
