"""Terminal bookkeeping shared by the client's maintenance and the worker: failure records,
exception-based retries and Result stream entries (rq-protocol §4.10, §4.12, §5)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from redis.asyncio import Redis
from redis.exceptions import ResponseError
from rq.defaults import DEFAULT_FAILURE_TTL
from rq.job import Job as RQJob
from rq.job import JobStatus
from rq.results import Result
from rq.utils import current_timestamp

from . import keys
from .codec import NOIO, save
from .defaults import job_timeout
from .enqueue import Sink, buffer_cleanup, buffer_enqueue, buffer_schedule_in
from .jobs import Deletion, buffer_deletion, read_deletion

# What Redis accepts as one value unless configured otherwise (``proto-max-bulk-len``), and
# the least it can be configured to.
DEFAULT_MAX_BULK_LENGTH = 512 * 1024 * 1024
SMALLEST_MAX_BULK_LENGTH = 1024 * 1024


class ResultTooLargeError(ValueError):
    """A job's result, encoded, is larger than Redis accepts as one value."""


class ResultLimit:
    """The largest encoded result worth sending. It starts at the least any Redis accepts; only
    a larger result makes it ask the server (``CONFIG GET proto-max-bulk-len``, once), so the
    common case sends no ``CONFIG`` that an ACL would refuse and log."""

    def __init__(self) -> None:
        self.size = SMALLEST_MAX_BULK_LENGTH
        self.known = False

    async def learn(self, conn: Redis) -> bool:
        """Ask the server once; ``True`` when the limit grew (a refused result may now fit)."""
        if self.known:
            return False
        self.known = True
        try:
            reply = await conn.config_get('proto-max-bulk-len')
        except ResponseError:  # CONFIG refused (an ACL user, a managed Redis): Redis's default
            reply = {}
        values = [v for v in reply.values() if v is not None]
        self.size = int(values[0]) if values else DEFAULT_MAX_BULK_LENGTH
        return self.size > SMALLEST_MAX_BULK_LENGTH


def buffer_result(
    pipe: Sink,
    job: RQJob,
    type_: Result.Type,
    ttl: int | None,
    *,
    return_value: Any = None,
    exc_string: str | None = None,
    worker_name: str = '',
    execution_id: str | None = None,
    execution_started_at: datetime | None = None,
    execution_ended_at: datetime | None = None,
    max_size: int | None = None,
) -> None:
    """``Result.save``: ``XADD … MAXLEN ~ 10`` then the stream TTL (None untouched, -1 persist).
    Raises :class:`ResultTooLargeError` when the encoded return value is over ``max_size`` bytes."""
    # rq's Result codec, built without __init__: it would re-resolve the (already resolved)
    # serializer through a slow runtime-protocol check on every job.
    result = Result.__new__(Result)
    result.__dict__.update(
        job_id=job.id,
        type=type_,
        connection=NOIO,
        return_value=return_value,
        exc_string=exc_string,
        worker_name=worker_name,
        serializer=job.serializer,
        execution_id=execution_id,
        execution_started_at=execution_started_at,
        execution_ended_at=execution_ended_at,
        id=None,
    )
    entry = cast(dict[Any, Any], result.serialize())
    check_result_size(job.id, entry, max_size)
    buffer_result_entry(pipe, job.id, entry, ttl)


def check_result_size(job_id: str, entry: dict[Any, Any], max_size: int | None) -> None:
    """Raises :class:`ResultTooLargeError` when the entry's encoded return value is over ``max_size``."""
    if max_size is not None and len(entry.get('return_value') or b'') > max_size:
        raise ResultTooLargeError(
            f'The result of job {job_id} is {len(entry["return_value"])} bytes encoded; '
            f'Redis accepts at most {max_size} bytes in one value (proto-max-bulk-len)'
        )


def buffer_result_entry(pipe: Sink, job_id: str, entry: dict[Any, Any], ttl: int | None) -> None:
    """``Result.save`` of a serialized entry: ``XADD … MAXLEN ~ 10`` then the stream TTL (None
    untouched, -1 persist)."""
    key = keys.results(job_id)
    pipe.xadd(key, entry, maxlen=10)
    if ttl is not None:
        if ttl == -1:
            pipe.persist(key)
        else:
            pipe.expire(key, ttl)


def buffer_key_ttl(pipe: Sink, job_id: str, ttl: int | None) -> None:
    """``Job.cleanup(ttl)`` for a positive ttl (``enqueue.buffer_cleanup`` by id)."""
    if ttl is not None and ttl > 0:
        pipe.expire(keys.job(job_id), ttl)
        pipe.expire(keys.dependents(job_id), ttl)
        pipe.expire(keys.dependencies(job_id), ttl)


async def read_cleanup(conn: Redis, job: RQJob, ttl: int | None) -> Deletion | None:
    """What ``Job.cleanup(ttl)`` reads before it writes: a TTL of 0 deletes the job."""
    return await read_deletion(conn, job) if ttl == 0 else None


def failure_ttl(job: RQJob) -> int:
    """The TTL ``FailedJobRegistry.add`` gives the job."""
    return job.failure_ttl if job.failure_ttl is not None else DEFAULT_FAILURE_TTL


def buffer_job_cleanup(pipe: Sink, job: RQJob, ttl: int | None, deletion: Deletion | None) -> None:
    """``Job.cleanup(ttl)``: 0 deletes the job (on what :func:`read_cleanup` read), a positive
    ttl expires its keys."""
    if ttl == 0:
        assert deletion is not None, 'a TTL of 0 deletes the job: read_cleanup() first'
        buffer_deletion(pipe, deletion)
    else:
        buffer_cleanup(pipe, job, ttl)


def buffer_failed_registry_add(pipe: Sink, job: RQJob, exc_string: str, deletion: Deletion | None) -> None:
    """``FailedJobRegistry.add``: save without meta/result, expire, ``ZADD`` failed
    (``deletion``: :func:`read_cleanup` of the job with its :func:`failure_ttl`)."""
    ttl = failure_ttl(job)
    score = ttl if ttl < 0 else current_timestamp() + ttl
    job._exc_info = exc_string
    save(pipe, job, include_meta=False, include_result=False)
    buffer_job_cleanup(pipe, job, ttl, deletion)
    pipe.zadd(keys.registry('failed', job.origin), {job.id: score})


async def failed_registry_add(conn: Redis, job: RQJob, exc_string: str, pipeline: Sink | None = None) -> None:
    """``FailedJobRegistry.add``, in the caller's pipeline or in a MULTI of its own."""
    deletion = await read_cleanup(conn, job, failure_ttl(job))
    if pipeline is not None:
        buffer_failed_registry_add(pipeline, job, exc_string, deletion)
        return
    async with conn.pipeline(transaction=True) as pipe:
        buffer_failed_registry_add(pipe, job, exc_string, deletion)
        await pipe.execute()


def buffer_record_failure(
    pipe: Sink,
    job: RQJob,
    exc_string: str,
    deletion: Deletion | None,
    *,
    worker_name: str = '',
    execution_id: str | None = None,
    execution_started_at: datetime | None = None,
    execution_ended_at: datetime | None = None,
    status: JobStatus = JobStatus.FAILED,
) -> None:
    """Status, failed registry and a FAILED Result (``record_job_failure`` / ``_handle_failure``);
    ``deletion``: :func:`read_cleanup` of the job with its :func:`failure_ttl`."""
    job._status = status
    pipe.hset(keys.job(job.id), 'status', status.value)
    buffer_failed_registry_add(pipe, job, exc_string, deletion)
    buffer_result(
        pipe,
        job,
        Result.Type.FAILED,
        job.failure_ttl,
        exc_string=exc_string,
        worker_name=worker_name,
        execution_id=execution_id,
        execution_started_at=execution_started_at,
        execution_ended_at=execution_ended_at,
    )


def buffer_retry(pipe: Sink, job: RQJob) -> None:
    """``Job.retry``: exception-based retry, scheduled after the interval or re-enqueued now."""
    interval = job.get_retry_interval()
    assert job.retries_left
    job.retries_left -= 1
    buffer_retry_after(pipe, job, interval)


def buffer_retry_after(sink: Sink, job: RQJob, interval: int) -> None:
    """A retry (either kind): scheduled after ``interval`` seconds, else re-enqueued now."""
    if interval:
        # rq also sends ``HSET status scheduled`` on its own ahead of its MULTI; here it is only
        # inside the (guarded) write, which leaves the same state without a write that a
        # superseded outcome could make alone.
        buffer_schedule_in(sink, job, interval)
    else:
        buffer_enqueue(sink, job, job.origin, int(job_timeout(job.timeout)), job.enqueue_at_front_on_retry)
