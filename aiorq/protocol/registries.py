"""Registry reads, writes and cleanup (rq-protocol §2.2, §4.17)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, cast

from redis.asyncio import Redis
from redis.exceptions import WatchError
from rq.exceptions import AbandonedJobError, NoSuchJobError
from rq.job import Job as RQJob
from rq.job import JobStatus
from rq.registry import FailedJobRegistry
from rq.utils import as_text, current_timestamp, now, parse_composite_key

from . import dependents, keys, ratelimit
from .enqueue import buffer_wakeup
from .jobs import fetch
from .outcomes import buffer_record_failure, buffer_retry, failure_ttl, read_cleanup

logger = logging.getLogger('aiorq.protocol')

AbandonedHook = Callable[[RQJob], Awaitable[None]]


def parse_member(kind: str, member: bytes | str) -> str:
    """Job id of a registry member (``<id>:<exec>`` in the started registry)."""
    entry = as_text(member)
    if kind == 'started':
        return parse_composite_key(entry)[0]
    return entry


async def cleanup(
    conn: Redis,
    kind: str,
    name: str,
    *,
    serializer: Any = None,
    on_abandoned: AbandonedHook | None = None,
    timestamp: int | None = None,
) -> None:
    """The ``cleanup()`` of each registry kind, as ``count``/``get_job_ids`` run it."""
    key = keys.registry(kind, name)
    score = timestamp if timestamp is not None else current_timestamp()
    if kind in ('finished', 'failed'):
        await conn.zremrangebyscore(key, 0, score)
    elif kind == 'started':
        await cleanup_started(conn, name, serializer=serializer, on_abandoned=on_abandoned, timestamp=score)
    elif kind == 'ready':
        ids = [as_text(i) for i in cast(list[bytes], await conn.zrange(key, 0, -1))]
        await dependents.enqueue_ready_jobs(conn, name, ids, serializer=serializer)


async def _abandoned(
    conn: Redis, job_ids: list[str], serializer: Any, on_abandoned: AbandonedHook | None
) -> list[RQJob]:
    """The jobs of expired started-registry members that are still ``started``, each told to
    ``on_abandoned`` (its failure callback) first."""
    abandoned: list[RQJob] = []
    for job_id in job_ids:
        try:
            job = await fetch(conn, job_id, serializer=serializer)
        except NoSuchJobError:
            continue
        if job.get_status(refresh=False) != JobStatus.STARTED:
            continue
        if on_abandoned is not None:
            try:
                await on_abandoned(job)
            except Exception:
                logger.exception('Started registry cleanup: failure callback for job %s raised', job.id)
        abandoned.append(job)
    return abandoned


async def cleanup_started(
    conn: Redis,
    name: str,
    *,
    serializer: Any = None,
    on_abandoned: AbandonedHook | None = None,
    timestamp: int | None = None,
) -> list[RQJob]:
    """Abandoned executions: retried when the job has retries left, failed otherwise (§4.17 step 2)."""
    key = keys.registry('started', name)
    score = timestamp if timestamp is not None else current_timestamp()
    job_ids = [parse_member('started', m) for m in cast(list[bytes], await conn.zrangebyscore(key, 0, score))]
    if not job_ids:
        return []
    processed: list[RQJob] = []
    failed: list[tuple[RQJob, str]] = []
    async with conn.pipeline(transaction=True) as pipe:
        # Stronger than rq: an owner that was only late (its finish, or a heartbeat, lands on the
        # job hash meanwhile) keeps its job; the abandonment is not written over it.
        await pipe.watch(*[keys.job(i) for i in job_ids])
        abandoned = await _abandoned(conn, job_ids, serializer, on_abandoned)
        for job in abandoned:
            if not (job.retries_left and job.retries_left > 0):
                # rq releases a failed job's dependents at once, before its cleanup transaction.
                await dependents.enqueue_dependents(conn, job, parent_status=JobStatus.FAILED, serializer=serializer)
        # What the failures read (a failure_ttl of 0 deletes the job), before the MULTI buffers.
        deletions = {
            job.id: await read_cleanup(conn, job, failure_ttl(job))
            for job in abandoned
            if not (job.retries_left and job.retries_left > 0)
        }
        pipe.multi()
        for job in abandoned:
            if job.retries_left and job.retries_left > 0:
                buffer_retry(pipe, job)
            else:
                exc_string = f'Moved to {FailedJobRegistry.__name__}, due to {AbandonedJobError.__name__}, at {now()}'
                logger.warning('Started registry cleanup: %s %s', job.id, exc_string)
                buffer_record_failure(pipe, job, exc_string, deletions[job.id])
                failed.append((job, exc_string))
            processed.append(job)
        pipe.zremrangebyscore(key, 0, score)
        try:
            await pipe.execute()
        except WatchError:
            logger.info('Started registry cleanup of %s: a job changed under it; left for the next pass', name)
            return []
    for job, exc_string in failed:
        if job.webhooks:
            await asyncio.to_thread(job.send_webhooks, JobStatus.FAILED, exc_string=exc_string)
    for job in processed:
        await ratelimit.release_slot(conn, job)
    return processed


async def clean_registries(
    conn: Redis, name: str, *, serializer: Any = None, on_abandoned: AbandonedHook | None = None
) -> None:
    """``rq.registry.clean_registries``: finished, started, failed, ready, then every rate limit."""
    await cleanup(conn, 'finished', name)
    await cleanup(conn, 'started', name, serializer=serializer, on_abandoned=on_abandoned)
    await cleanup(conn, 'failed', name)
    await cleanup(conn, 'ready', name, serializer=serializer)
    await ratelimit.cleanup_all(conn)


async def count(conn: Redis, kind: str, name: str) -> int:
    return int(await conn.zcard(keys.registry(kind, name)))


async def job_ids(conn: Redis, kind: str, name: str, start: int = 0, end: int = -1, desc: bool = False) -> list[str]:
    members = cast(list[bytes], await conn.zrange(keys.registry(kind, name), start, end, desc=desc))
    return [parse_member(kind, m) for m in members]


async def job_and_execution_ids(
    conn: Redis, name: str, start: int = 0, end: int = -1, desc: bool = False
) -> list[tuple[str, str]]:
    members = cast(list[bytes], await conn.zrange(keys.registry('started', name), start, end, desc=desc))
    return [parse_composite_key(as_text(m)) for m in members]


async def expired_job_ids(conn: Redis, kind: str, name: str, timestamp: int | None = None) -> list[str]:
    score = timestamp if timestamp is not None else current_timestamp()
    found = cast(list[bytes], await conn.zrangebyscore(keys.registry(kind, name), 0, score))
    return [parse_member(kind, m) for m in found]


async def score(conn: Redis, kind: str, name: str, member: str) -> float | None:
    value = await conn.zscore(keys.registry(kind, name), member)
    return None if value is None else float(value)


async def add(
    conn: Redis, kind: str, name: str, job_id: str, ttl: int = 0, xx: bool = False, pipeline: Any = None
) -> int:
    """``BaseRegistry.add``: score now+ttl, a negative ttl as is, -1 meaning ``+inf`` (0 when
    buffered in a pipeline)."""
    value: int | str = ttl if ttl < 0 else current_timestamp() + ttl
    if value == -1:
        value = '+inf'
    if pipeline is not None:
        pipeline.zadd(keys.registry(kind, name), {job_id: value}, xx=xx)
        return 0
    return cast(int, await conn.zadd(keys.registry(kind, name), {job_id: value}, xx=xx))


async def add_now(
    conn: Redis, kind: str, name: str, job_id: str, xx: bool = False, pipeline: Any = None
) -> int:
    """Deferred and ready registries score by the time of adding (0 when buffered in a pipeline)."""
    if pipeline is not None:
        pipeline.zadd(keys.registry(kind, name), {job_id: current_timestamp()}, xx=xx)
        return 0
    return cast(int, await conn.zadd(keys.registry(kind, name), {job_id: current_timestamp()}, xx=xx))


async def schedule(conn: Redis, name: str, job_id: str, score: int, pipeline: Any = None) -> int:
    """``ScheduledJobRegistry.schedule``: ``ZADD`` at the due second, plus aiorq's wake-up hint."""
    if pipeline is not None:
        pipeline.zadd(keys.registry('scheduled', name), {job_id: score})
        buffer_wakeup(pipeline, name, score)
        return 0
    async with conn.pipeline(transaction=True) as pipe:
        pipe.zadd(keys.registry('scheduled', name), {job_id: score})
        buffer_wakeup(pipe, name, score)
        return int((await pipe.execute())[0])


async def remove_members(conn: Redis, kind: str, name: str, members: list[str], pipeline: Any = None) -> int:
    """``ZREM`` several members (buffered when ``pipeline`` is given)."""
    if pipeline is not None:
        pipeline.zrem(keys.registry(kind, name), *members)
        return 0
    return int(await conn.zrem(keys.registry(kind, name), *members))
