"""Releasing dependents in rq 3.0's two phases (rq-protocol §4.11)."""

from __future__ import annotations

import logging
from collections import defaultdict

from redis.asyncio import Redis
from redis.exceptions import WatchError
from rq.job import Job as RQJob
from rq.job import JobStatus
from rq.utils import as_text, current_timestamp

from . import keys
from .batch import APPLIED, Batch
from .codec import parse_status
from .defaults import DEFAULT_JOB_TIMEOUT
from .enqueue import Pipe, buffer_enqueue, dependencies_are_met, enqueue_rate_limited
from .reads import fetch_many

logger = logging.getLogger('aiorq.protocol')


async def move_dependents_to_ready(
    conn: Redis,
    parent: RQJob,
    *,
    pipe: Pipe | None = None,
    exclude_job_id: str | None = None,
    parent_status: JobStatus | None = None,
    serializer: object = None,
) -> dict[str, list[str]]:
    """Phase A. With ``pipe`` (already watching) the writes are buffered into it for the
    caller's EXEC and a ``WatchError`` is the caller's; without it this runs its own
    WATCH/MULTI/EXEC and retries."""
    own = pipe is None
    p = pipe if pipe is not None else conn.pipeline(transaction=True)
    dependents_key = keys.dependents(parent.id)
    try:
        while True:
            try:
                if own:
                    await p.watch(dependents_key)
                ids = {as_text(i) for i in await p.smembers(dependents_key)}
                if not ids:
                    return {}
                ready = await _ready_dependents(conn, p, parent, sorted(ids), exclude_job_id, parent_status, serializer)
                p.multi()
                if not ready:
                    return {}
                grouped = _buffer_ready(p, ready)
                if len(ready) == len(ids):
                    p.delete(dependents_key)
                else:
                    p.srem(dependents_key, *[d.id for d in ready])
                if own:
                    await p.execute()
                return {origin: [d.id for d in group] for origin, group in grouped.items()}
            except WatchError:
                if not own:
                    raise
    finally:
        if own:
            await p.reset()


async def _ready_dependents(
    conn: Redis,
    pipe: Pipe,
    parent: RQJob,
    ids: list[str],
    exclude_job_id: str | None,
    parent_status: JobStatus | None,
    serializer: object,
) -> list[RQJob]:
    """The dependents (of ``ids``) whose dependencies are met and that are not canceled."""
    ready: list[RQJob] = []
    for dependent in await fetch_many(conn, ids, serializer=serializer):
        if dependent is None:
            continue
        if not await dependencies_are_met(
            conn, dependent, parent=parent, parent_status=parent_status, exclude_job_id=exclude_job_id, pipe=pipe
        ):
            continue
        if dependent.get_status(refresh=False) == JobStatus.CANCELED:
            continue
        ready.append(dependent)
    return ready


def _buffer_ready(pipe: Pipe, ready: list[RQJob]) -> dict[str, list[RQJob]]:
    """Each ready dependent leaves its deferred registry for the ready one; grouped by queue."""
    grouped: dict[str, list[RQJob]] = defaultdict(list)
    for dependent in ready:
        grouped[dependent.origin].append(dependent)
    for origin, group in grouped.items():
        for dependent in group:
            pipe.zrem(keys.registry('deferred', origin), dependent.id)
            dependent._status = JobStatus.READY_TO_ENQUEUE
            pipe.hset(keys.job(dependent.id), 'status', JobStatus.READY_TO_ENQUEUE.value)
            pipe.zadd(keys.registry('ready', origin), {dependent.id: current_timestamp()})
    return grouped


async def enqueue_ready_jobs(
    conn: Redis,
    queue_name: str,
    job_ids: list[str],
    default_timeout: int = DEFAULT_JOB_TIMEOUT,
    serializer: object = None,
) -> list[RQJob]:
    """Phase B (``ReadyJobRegistry.enqueue_jobs``): claim each id with WATCH + ZSCORE, then push."""
    if not job_ids:
        return []
    ready_key = keys.registry('ready', queue_name)
    enqueued: list[RQJob] = []
    for job_id, job in zip(job_ids, await fetch_many(conn, job_ids, serializer=serializer)):
        if job is None or job.get_status(refresh=False) != JobStatus.READY_TO_ENQUEUE:
            await conn.zrem(ready_key, job_id)
            continue
        try:
            if await _claim_and_enqueue(conn, ready_key, job, queue_name, default_timeout):
                enqueued.append(job)
        except Exception:
            logger.exception('Failed to enqueue ready job %s; leaving it in the ready registry', job_id)
    return enqueued


async def _claim_and_enqueue(conn: Redis, ready_key: str, job: RQJob, queue_name: str, default_timeout: int) -> bool:
    """Claim one ready id and push it, atomically. rq claims with WATCH + ZSCORE and gives up on
    the first ``WatchError``; an aiorq worker's own concurrent releases change ``rq:ready:<q>``
    all the time, so the claim is one guarded script instead (the id still in the registry and
    the job still ``ready_to_enqueue``), which cannot be disturbed. Rate-limited jobs, whose push
    goes through the limiter's script, keep rq's optimistic claim."""
    if not job.has_rate_limit:
        batch = Batch()
        batch.guard_member(ready_key, job.id)
        still_ready = batch.guard_field(keys.job(job.id), 'status', JobStatus.READY_TO_ENQUEUE.value)
        batch.zrem(ready_key, job.id)
        buffer_enqueue(batch, job, queue_name, default_timeout, job.should_enqueue_at_front())
        failed = await batch.run(conn)
        if failed == still_ready:
            await conn.zrem(ready_key, job.id)  # no longer ready: a stale entry, as rq drops it
        return failed == APPLIED
    for _ in range(10):
        try:
            async with conn.pipeline(transaction=True) as pipe:
                await pipe.watch(ready_key, keys.job(job.id))
                if await pipe.zscore(ready_key, job.id) is None:
                    await pipe.unwatch()
                    return False
                status = parse_status(await pipe.hget(keys.job(job.id), 'status'))
                if status != JobStatus.READY_TO_ENQUEUE:
                    pipe.multi()
                    pipe.zrem(ready_key, job.id)
                    await pipe.execute()
                    return False
                pipe.multi()
                pipe.zrem(ready_key, job.id)
                if job.has_rate_limit:
                    await enqueue_rate_limited(conn, job, queue_name, default_timeout, pipeline=pipe)
                else:
                    buffer_enqueue(pipe, job, queue_name, default_timeout, job.should_enqueue_at_front())
                await pipe.execute()
                return True
        except WatchError:
            continue
    logger.info('Ready job %s kept changing while enqueueing; left for maintenance', job.id)
    return False


async def enqueue_ready_by_queue(conn: Redis, mapping: dict[str, list[str]], serializer: object = None) -> None:
    for queue_name, ids in mapping.items():
        try:
            await enqueue_ready_jobs(conn, queue_name, ids, serializer=serializer)
        except Exception:
            logger.exception('Failed to drain ready dependents for queue %s', queue_name)


async def enqueue_dependents(
    conn: Redis,
    parent: RQJob,
    *,
    exclude_job_id: str | None = None,
    parent_status: JobStatus | None = None,
    serializer: object = None,
) -> dict[str, list[str]]:
    """Both phases, as ``rq.Queue.enqueue_dependents``."""
    moved = await move_dependents_to_ready(
        conn, parent, exclude_job_id=exclude_job_id, parent_status=parent_status, serializer=serializer
    )
    await enqueue_ready_by_queue(conn, moved, serializer=serializer)
    return moved
