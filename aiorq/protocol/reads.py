"""Reading jobs (``Job.exists``, ``Job.fetch``, ``Job.fetch_many``): the reads the transitions
of ``jobs`` and ``dependents`` share, below both of them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from rq.job import Job as RQJob
from rq.job import parse_job_id

from . import keys
from .codec import restore_job


async def exists(conn: Redis, job_id: str) -> bool:
    return bool(await conn.exists(keys.job(job_id)))


async def fetch(conn: Redis, job_id: str, serializer: Any = None) -> RQJob:
    """``Job.fetch``: accepts ``<id>:<exec>``; ``NoSuchJobError`` when the hash is missing."""
    job_id = parse_job_id(job_id)
    return restore_job(job_id, await conn.hgetall(keys.job(job_id)), serializer)


async def fetch_many(conn: Redis, job_ids: Sequence[str], serializer: Any = None) -> list[RQJob | None]:
    ids = [parse_job_id(j) for j in job_ids]
    if not ids:
        return []
    async with conn.pipeline(transaction=True) as pipe:
        for job_id in ids:
            pipe.hgetall(keys.job(job_id))
        raws = await pipe.execute()
    return [restore_job(i, raw, serializer) if raw else None for i, raw in zip(ids, raws)]
