"""Queue lists: listing, counting, removing, emptying, compacting (rq-protocol §4.15)."""

from __future__ import annotations

import uuid
from typing import cast

from redis.asyncio import Redis
from rq.utils import as_text

from . import keys, scripts


async def all_names(conn: Redis) -> list[str]:
    """Names behind ``rq:queues`` (a member without the prefix raises ``ValueError`` as in rq)."""
    return [keys.queue_name(as_text(k)) for k in await conn.smembers(keys.QUEUES)]


async def count(conn: Redis, name: str) -> int:
    return int(await conn.llen(keys.queue(name)))


async def job_ids(conn: Redis, name: str, offset: int = 0, length: int = -1) -> list[str]:
    if length == 0:
        return []
    start = offset
    if length >= 0:
        end = offset + (length - 1)
    else:
        end = length
    return [as_text(i) for i in await conn.lrange(keys.queue(name), start, end)]


async def remove(conn: Redis, name: str, job_id: str) -> int:
    return int(await conn.lrem(keys.queue(name), 1, job_id))


async def empty(conn: Redis, name: str) -> int:
    """``Queue.empty``: pop every id, deleting its hash, results and dependents set."""
    return int(await scripts.run(conn, scripts.EMPTY_QUEUE_SCRIPT, [keys.queue(name)], []))


async def delete(conn: Redis, name: str, delete_jobs: bool = True) -> None:
    if delete_jobs:
        await empty(conn, name)
    async with conn.pipeline(transaction=True) as pipe:
        pipe.srem(keys.QUEUES, keys.queue(name))
        pipe.delete(keys.queue(name))
        await pipe.execute()


async def compact(conn: Redis, name: str) -> None:
    """``Queue.compact``: rebuild the list keeping only ids whose hash exists."""
    temp = keys.queue('_compact:' + str(uuid.uuid4()))
    await conn.rename(keys.queue(name), temp)
    while True:
        job_id = cast(bytes | None, await conn.lpop(temp))
        if job_id is None:
            break
        if await conn.exists(keys.job(as_text(job_id))):
            await conn.rpush(keys.queue(name), job_id)


async def push(conn: Redis, name: str, job_id: str, at_front: bool = False) -> None:
    """``Queue.push_job_id``: ``LPUSH`` at the front, else ``RPUSH``."""
    if at_front:
        await conn.lpush(keys.queue(name), job_id)
    else:
        await conn.rpush(keys.queue(name), job_id)


async def pop(conn: Redis, name: str) -> str | None:
    """``Queue.pop_job_id``: ``LPOP``."""
    job_id = cast(bytes | None, await conn.lpop(keys.queue(name)))
    return None if job_id is None else as_text(job_id)


async def scheduler_pid(conn: Redis, name: str) -> int | None:
    """The pid of the scheduler holding this queue's lock (``Queue.scheduler_pid``)."""
    owner = cast(bytes | None, await conn.get(keys.scheduler_lock(name)))
    if owner is None:
        return None
    pid = await conn.hget(keys.scheduler(as_text(owner)), 'pid')
    return int(pid) if pid else None
