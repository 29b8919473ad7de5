"""The concurrency limiter's releases and maintenance (rq-protocol §9.3–9.4)."""

from __future__ import annotations

from typing import cast

from redis.asyncio import Redis
from rq.job import Job as RQJob
from rq.job import JobStatus
from rq.utils import as_text, current_timestamp, now, utcformat

from . import keys, scripts


async def concurrency(conn: Redis, key: str) -> int:
    value = await conn.hget(keys.rl_config(key), 'concurrency')
    return int(value) if value else 0


def _tail(c: int) -> list[object]:
    return [c, current_timestamp(), utcformat(now()), keys.QUEUE_PREFIX, keys.JOB_PREFIX]


async def release_slot(conn: Redis, job: RQJob) -> list[str]:
    """Owner release after the outcome committed; kept while the job is queued or started."""
    if not job.has_rate_limit or job.get_status(refresh=False) in (JobStatus.QUEUED, JobStatus.STARTED):
        return []
    assert job.rate_limit_key
    return await release_owned(conn, job.rate_limit_key, job.id)


async def release_owned(conn: Redis, key: str, job_id: str) -> list[str]:
    """:func:`release_slot` for a job whose outcome committed (finished, failed or stopped)."""
    c = await concurrency(conn, key)
    promoted = await scripts.run(
        conn, scripts.RELEASE_AND_ENQUEUE_SCRIPT, [keys.rl_allowed(key), keys.rl_waiting(key)], [*_tail(c), job_id]
    )
    return [as_text(p) for p in promoted]


async def release_stale(conn: Redis, key: str, job_id: str) -> list[str]:
    """Non-owner release (cancel, delete, maintenance): only frees a slot nobody is using."""
    c = await concurrency(conn, key)
    promoted = await scripts.run(
        conn,
        scripts.RELEASE_STALE_AND_ENQUEUE_SCRIPT,
        [keys.rl_allowed(key), keys.rl_waiting(key), keys.job(job_id), keys.executions(job_id)],
        [*_tail(c), job_id],
    )
    return [as_text(p) for p in promoted]


async def cancel(conn: Redis, key: str, job_id: str, *, release: bool = True) -> None:
    """``RateLimitRegistry.cancel``: drop a waiter; without a caller pipeline also free its slot."""
    await conn.zrem(keys.rl_waiting(key), job_id)
    if release:
        await release_stale(conn, key, job_id)


async def cleanup_all(conn: Redis) -> None:
    """``RateLimitRegistry.cleanup`` for every key in ``rq:rl-keys``."""
    for raw_key in cast(set[bytes], await conn.smembers(keys.RL_KEYS)):
        key = as_text(raw_key)
        holders = [as_text(i) for i in cast(list[bytes], await conn.zrange(keys.rl_allowed(key), 0, -1))]
        if holders:
            async with conn.pipeline(transaction=True) as pipe:
                for job_id in holders:
                    pipe.hget(keys.job(job_id), 'status')
                statuses = await pipe.execute()
            for job_id, status in zip(holders, statuses):
                if status is None or as_text(status) not in (JobStatus.QUEUED.value, JobStatus.STARTED.value):
                    await release_stale(conn, key, job_id)
        c = await concurrency(conn, key)
        if c and await scripts.run(
            conn, scripts.ACQUIRE_AND_ENQUEUE_SCRIPT, [keys.rl_allowed(key), keys.rl_waiting(key)], _tail(c)
        ):
            continue
        else:
            await scripts.run(
                conn,
                scripts.CLEANUP_REGISTRY_SCRIPT,
                [keys.rl_allowed(key), keys.rl_waiting(key), keys.rl_config(key), keys.RL_KEYS],
                [key],
            )
