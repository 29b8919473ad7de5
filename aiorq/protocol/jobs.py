"""Reading and changing one job: fetch, status, meta, results, executions, cancel, delete, requeue."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from redis.asyncio import Redis
from redis.exceptions import WatchError
from rq.exceptions import InvalidJobOperation, NoSuchGroupError, NoSuchJobError
from rq.executions import Execution
from rq.job import Job as RQJob
from rq.job import JobStatus
from rq.results import Result
from rq.utils import as_text, current_timestamp

from . import dependents, keys, ratelimit, wire
from .codec import NOIO, mapping, parse_status
from .defaults import DEFAULT_JOB_TIMEOUT
from .enqueue import Pipe, Sink, buffer_enqueue, enqueue_rate_limited

# The reads live below this module (``dependents`` needs them too); callers find them here as well.
from .reads import exists as exists
from .reads import fetch as fetch
from .reads import fetch_many as fetch_many

# Which registry holds a job, by its stored status (Job._remove_from_registries).
_REGISTRY_BY_STATUS = {
    JobStatus.FINISHED: 'finished',
    JobStatus.DEFERRED: 'deferred',
    JobStatus.READY_TO_ENQUEUE: 'ready',
    JobStatus.SCHEDULED: 'scheduled',
    JobStatus.FAILED: 'failed',
    JobStatus.STOPPED: 'failed',
    JobStatus.CANCELED: 'canceled',
}


async def descriptions(conn: Redis, job_ids: Sequence[str]) -> list[str | None]:
    """Each job's ``description`` as text, read without deserializing anything (for tools that
    only show jobs); ``None`` for a job whose hash is gone, ``''`` for one without a description."""
    if not job_ids:
        return []
    async with conn.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.exists(keys.job(job_id))
            pipe.hget(keys.job(job_id), 'description')
        replies = await pipe.execute()
    return [
        None if not found else raw.decode(errors='replace') if isinstance(raw, bytes) else raw or ''
        for found, raw in zip(replies[::2], replies[1::2])
    ]


async def get_status(conn: Redis, job_id: str) -> JobStatus | None:
    return parse_status(await conn.hget(keys.job(job_id), 'status'))


async def set_status(conn: Redis, job: RQJob, status: JobStatus, pipeline: Pipe | None = None) -> None:
    job._status = status
    target: Any = pipeline if pipeline is not None else conn
    result = target.hset(keys.job(job.id), 'status', status.value)
    if pipeline is None:
        await result


async def get_meta(conn: Redis, job: RQJob) -> dict[str, Any]:
    raw = await conn.hget(keys.job(job.id), 'meta')
    job.meta = job.serializer.loads(cast(bytes, raw)) if raw else {}
    return job.meta


async def save(
    conn: Redis, job: RQJob, pipeline: Pipe | None = None, include_meta: bool = True, include_result: bool = True
) -> None:
    target: Any = pipeline if pipeline is not None else conn
    result = target.hset(keys.job(job.id), mapping=mapping(job, include_meta, include_result))
    if pipeline is None:
        await result


async def save_meta(conn: Redis, job: RQJob) -> None:
    await conn.hset(keys.job(job.id), 'meta', job._serialize_meta())


# -- results ---------------------------------------------------------------------------------


def _stream_entries(raw: Any) -> list[tuple[Any, dict[Any, Any]]] | None:
    """The entries of a one-stream ``XREAD`` reply, raw in RESP2 (a list of [key, entries]) or
    RESP3 (a map of key to entries), as (id, fields) pairs like redis-py's parsed reply."""
    if not raw:
        return None
    stream = next(iter(raw.values())) if isinstance(raw, dict) else raw[0][1]
    return [(entry_id, dict(zip(flat[::2], flat[1::2]))) for entry_id, flat in stream]


def _restore_result(job_id: str, entry_id: Any, payload: Any, serializer: Any) -> Result:
    return Result.restore(job_id, as_text(entry_id), payload, connection=NOIO, serializer=serializer)


async def latest_result(conn: Redis, job_id: str, serializer: Any = None, timeout: float = 0) -> Result | None:
    """``Result.fetch_latest``: ``XREVRANGE … COUNT 1``, or with a timeout a blocking
    ``XREAD`` from the start of the stream (the newest entry at once if any exists).

    The blocking read's reply is awaited as long as the wait lasts, not the client's
    ``socket_timeout``, so a wait longer than that is not cut."""
    key = keys.results(job_id)
    if timeout:
        entries = await _read_after(conn, key, '0-0', timeout)
        if not entries:
            return None
        entry_id, payload = entries[-1]
    else:
        response: Any = await conn.xrevrange(key, '+', '-', count=1)
        if not response:
            return None
        entry_id, payload = response[0]
    return _restore_result(job_id, entry_id, payload, serializer)


async def _read_after(conn: Redis, key: str, after: str, timeout: float) -> list[tuple[Any, dict[Any, Any]]] | None:
    """``XREAD BLOCK`` for the entries of ``key`` after ``after``, waiting up to ``timeout`` s."""
    block = max(1, int(round(timeout * 1000)))
    if conn.single_connection_client:
        response: Any = await conn.xread({key: after}, block=block)
        return response[0][1] if response else None
    # A pooled connection whose read waits as long as the block (plus the client's own
    # margin), so the client's socket_timeout does not cut a longer wait.
    margin = conn.connection_pool.connection_kwargs.get('socket_timeout') or 5
    raw = await wire.blocking_command(conn, ('XREAD', 'BLOCK', block, 'STREAMS', key, after), timeout + margin)
    return _stream_entries(raw)


async def status_and_latest_result(
    conn: Redis, job_id: str, serializer: Any = None
) -> tuple[JobStatus | None, Result | None]:
    """The job's status and newest result, read together (``MULTI``): a worker writes both in
    one transaction, so the pair is always one outcome (rq-protocol §5)."""
    async with conn.pipeline(transaction=True) as pipe:
        pipe.hget(keys.job(job_id), 'status')
        pipe.xrevrange(keys.results(job_id), '+', '-', count=1)
        status, newest = await pipe.execute()
    latest = _restore_result(job_id, newest[0][0], newest[0][1], serializer) if newest else None
    return parse_status(status), latest


async def wait_for_result_after(conn: Redis, job_id: str, after: str, timeout: float) -> bool:
    """Block until the job's result stream has an entry newer than ``after`` (a stream id,
    ``0-0`` for any) or ``timeout`` s pass; True if one came. No connection is held after."""
    return bool(await _read_after(conn, keys.results(job_id), after, timeout))


async def all_results(conn: Redis, job_id: str, serializer: Any = None) -> list[Result]:
    response: Any = await conn.xrevrange(keys.results(job_id), '+', '-')
    return [_restore_result(job_id, entry_id, payload, serializer) for entry_id, payload in response]


async def result_count(conn: Redis, job_id: str) -> int:
    return await conn.xlen(keys.results(job_id))


async def delete_results(conn: Redis, job_id: str) -> None:
    await conn.delete(keys.results(job_id))


# -- relations -------------------------------------------------------------------------------


async def dependent_ids(conn: Redis, job_id: str) -> list[str]:
    return [as_text(i) for i in await conn.smembers(keys.dependents(job_id))]


async def dependency_ids(conn: Redis, job_id: str) -> list[str]:
    return [as_text(i) for i in await conn.smembers(keys.dependencies(job_id))]


async def position(conn: Redis, queue_name: str, job_id: str) -> int | None:
    pos = cast(int | None, await conn.lpos(keys.queue(queue_name), job_id))
    return pos


async def cleanup_executions(conn: Redis, job_id: str, timestamp: float | None = None) -> None:
    """``ExecutionRegistry.cleanup``: drop execution ids whose score (deadline) passed."""
    score = timestamp if timestamp is not None else current_timestamp()
    await conn.zremrangebyscore(keys.executions(job_id), 0, score)


async def execution_ids(conn: Redis, job_id: str, start: int = 0, end: int = -1) -> list[str]:
    """``ExecutionRegistry.get_execution_ids``: cleanup, then the ids by score."""
    await cleanup_executions(conn, job_id)
    return [as_text(i) for i in cast(list[bytes], await conn.zrange(keys.executions(job_id), start, end))]


async def get_executions(conn: Redis, job_id: str, start: int = 0, end: int = -1) -> list[Execution]:
    """``Job.get_executions``: prune expired ids, then read each hash (``ValueError`` if one is gone)."""
    executions = []
    for execution_id in await execution_ids(conn, job_id, start, end):
        execution = Execution(id=execution_id, job_id=job_id, connection=NOIO)
        data = await conn.hgetall(execution.key)
        if not data:
            raise ValueError(f'Execution {execution.id} not found in Redis')
        execution.restore(data)
        executions.append(execution)
    return executions


def buffer_delete_execution(pipe: Pipe, job: RQJob, execution: Execution) -> None:
    """``Execution.delete`` of one of ``job``'s executions."""
    buffer_execution_records_delete(pipe, job.id, execution.id, job.origin, execution.worker_name or None)


def buffer_execution_records_delete(
    sink: Sink, job_id: str, execution_id: str, queue_name: str, worker_name: str | None
) -> None:
    """An execution's records gone (``Execution.delete``): its hash, its started-registry member,
    its entry in the job's executions index and in its worker's (when the worker is known).
    Every end of an execution (finished, failed, superseded, unreadable, deleted) uses this."""
    member = f'{job_id}:{execution_id}'
    sink.delete(keys.execution(job_id, execution_id))
    sink.zrem(keys.registry('started', queue_name), member)
    sink.zrem(keys.executions(job_id), execution_id)
    if worker_name:
        sink.srem(keys.worker_executions(worker_name), member)


@dataclass
class Deletion:
    """What ``Job.delete`` reads before it writes (§4.15), read by :func:`read_deletion` so that
    :func:`buffer_deletion` sends nothing: the job's *stored* status (it picks the registry),
    its executions (when its status is ``started`` or it has no rate limit: rq reads them only
    then), whether its group still exists, and the same for each dependent to delete."""

    job: RQJob
    status: JobStatus | None
    executions: list[Execution]
    group_exists: bool = True
    dependents: list[Deletion] | None = None  # None: the dependents are not deleted


async def read_registry_facts(conn: Redis, job: RQJob) -> tuple[JobStatus | None, list[Execution]]:
    """What ``Job._remove_from_registries`` reads: the stored status, and the executions when
    that status is ``started``."""
    status = await get_status(conn, job.id)
    return status, (await get_executions(conn, job.id) if status == JobStatus.STARTED else [])


async def read_deletion(conn: Redis, job: RQJob, delete_dependents: bool = False) -> Deletion:
    """Everything ``Job.delete`` reads, in rq's order (a pruning read of the executions index
    is the one write, as in rq)."""
    status, executions = await read_registry_facts(conn, job)
    deps: list[Deletion] | None = None
    if delete_dependents:
        deps = []
        for dep_id in await dependent_ids(conn, job.id):
            try:
                dependent = await fetch(conn, dep_id, serializer=job.serializer)
            except NoSuchJobError:
                continue
            deps.append(await read_deletion(conn, dependent))
    if not job.has_rate_limit and status != JobStatus.STARTED:
        executions = await get_executions(conn, job.id)
    group_exists = not job.group_id or bool(await conn.exists(keys.group(job.group_id)))
    return Deletion(job, status, executions, group_exists, deps)


def buffer_remove_from_registries(
    pipe: Sink, job: RQJob, status: JobStatus | None, executions: list[Execution], remove_from_queue: bool = True
) -> None:
    """``Job._remove_from_registries`` on what :func:`read_registry_facts` read."""
    if remove_from_queue:
        pipe.lrem(keys.queue(job.origin), 1, job.id)
    if status == JobStatus.STARTED:
        members = [e.composite_key for e in executions]
        if members:
            pipe.zrem(keys.registry('started', job.origin), *members)
    elif status is not None and status in _REGISTRY_BY_STATUS:
        pipe.zrem(keys.registry(_REGISTRY_BY_STATUS[status], job.origin), job.id)


def buffer_deletion(pipe: Sink, deletion: Deletion, remove_from_queue: bool = True) -> None:
    """``Job.delete``'s writes on what :func:`read_deletion` read; raises ``NoSuchGroupError``
    (nothing buffered for the group) when the job's group is gone, as rq's delete does."""
    job = deletion.job
    buffer_remove_from_registries(pipe, job, deletion.status, deletion.executions, remove_from_queue)
    if deletion.dependents is not None:
        for dependent in deletion.dependents:
            buffer_deletion(pipe, dependent, False)
        pipe.delete(keys.dependents(job.id))
    if not job.has_rate_limit:
        # A live execution of a rate-limited job keeps its slot; rq leaves its executions alone.
        for execution in deletion.executions:
            buffer_delete_execution(pipe, job, execution)
        pipe.delete(keys.executions(job.id))
    if job.group_id:
        if not deletion.group_exists:
            raise NoSuchGroupError
        pipe.srem(keys.group(job.group_id), job.id)
    pipe.delete(keys.job(job.id), keys.dependents(job.id), keys.dependencies(job.id), keys.results(job.id))


async def cancel(
    conn: Redis,
    job: RQJob,
    *,
    pipeline: Pipe | None = None,
    enqueue_dependents: bool = False,
    remove_from_dependencies: bool = False,
) -> dict[str, list[str]]:
    """4.15 ``Job.cancel``; returns ``{queue: [dependents moved to ready]}``."""

    if await get_status(conn, job.id) == JobStatus.CANCELED:
        raise InvalidJobOperation(f'Cannot cancel already canceled job: {job.id}')
    if pipeline is not None and job.has_rate_limit:
        raise InvalidJobOperation('Cannot cancel a rate-limited job with a caller-supplied pipeline')
    pipe = pipeline if pipeline is not None else conn.pipeline(transaction=True)
    moved: dict[str, list[str]] = {}
    try:
        while True:
            try:
                if enqueue_dependents:
                    if pipeline is None:
                        await pipe.watch(keys.dependents(job.id))
                    moved = await dependents.move_dependents_to_ready(
                        conn, job, pipe=pipe, exclude_job_id=job.id, serializer=job.serializer
                    )
                # Read what the registry removal needs before the transaction starts buffering.
                status, executions = await read_registry_facts(conn, job)
                if not pipe.explicit_transaction:
                    pipe.multi()
                job._status = JobStatus.CANCELED
                pipe.hset(keys.job(job.id), 'status', JobStatus.CANCELED.value)
                if remove_from_dependencies:
                    for dep in await fetch_many(conn, job._dependency_ids, serializer=job.serializer):
                        if dep is not None:
                            pipe.srem(keys.dependents(dep.id), job.id)
                buffer_remove_from_registries(pipe, job, status, executions)
                pipe.zadd(keys.registry('canceled', job.origin), {job.id: current_timestamp()})
                if pipeline is None:
                    await pipe.execute()
                break
            except WatchError:
                if pipeline is not None:
                    raise
                moved = {}
    finally:
        if pipeline is None:
            await pipe.reset()
    if pipeline is None and enqueue_dependents:
        await dependents.enqueue_ready_by_queue(conn, moved, serializer=job.serializer)
    if job.has_rate_limit:
        assert job.rate_limit_key
        await ratelimit.cancel(conn, job.rate_limit_key, job.id)
    return moved


async def delete(
    conn: Redis,
    job: RQJob,
    *,
    pipeline: Pipe | None = None,
    remove_from_queue: bool = True,
    delete_dependents: bool = False,
) -> None:
    """4.15 ``Job.delete``: registries, dependents, executions, group, keys and results."""
    pipe = pipeline if pipeline is not None else conn.pipeline(transaction=True)
    try:
        buffer_deletion(pipe, await read_deletion(conn, job, delete_dependents), remove_from_queue)
        if pipeline is None:
            await pipe.execute()
    finally:
        if pipeline is None:
            await pipe.reset()
    if job.has_rate_limit:
        assert job.rate_limit_key
        await ratelimit.cancel(conn, job.rate_limit_key, job.id, release=pipeline is None)


async def delete_dependents(conn: Redis, job_id: str, serializer: Any = None) -> None:
    """``Job.delete_dependents``: delete every dependent, then the dependents set, in one MULTI."""
    async with conn.pipeline(transaction=True) as pipe:
        for dep_id in await dependent_ids(conn, job_id):
            try:
                dependent = await fetch(conn, dep_id, serializer)
            except NoSuchJobError:
                continue
            buffer_deletion(pipe, await read_deletion(conn, dependent), False)
        pipe.delete(keys.dependents(job_id))
        await pipe.execute()


async def requeue(
    conn: Redis, job: RQJob, registry_key: str, *, at_front: bool = False, default_timeout: int = DEFAULT_JOB_TIMEOUT
) -> RQJob:
    """4.16 ``FailedJobRegistry.requeue`` (any registry of bare ids)."""
    if not await conn.zrem(registry_key, job.id):
        raise InvalidJobOperation(f'Job {job.id} is not in {registry_key}')
    job.started_at = None
    job.ended_at = None
    job._exc_info = ''
    if job.has_rate_limit:
        job.enqueue_at_front = at_front
        return await enqueue_rate_limited(conn, job, job.origin, default_timeout)
    async with conn.pipeline(transaction=True) as pipe:
        buffer_enqueue(pipe, job, job.origin, default_timeout, at_front)
        await pipe.execute()
    return job
