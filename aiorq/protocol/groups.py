"""Groups: ``rq:group:<g>`` (the members' ids) and ``rq:groups`` (the names), rq-protocol §4.5.

The member cleanup that needs ``missing_keys`` is group maintenance (§4.17) and lives in
:mod:`.maintenance`, which builds on this module.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import cast

from redis.asyncio import Redis
from rq.utils import as_text

from . import keys
from .enqueue import Pipe, Sink

# Buffers a batch of jobs into the given pipeline and returns their ids.
BufferJobs = Callable[[Pipe], Awaitable[Sequence[str]]]


def buffer_add_jobs(pipe: Sink, name: str, job_ids: Sequence[str]) -> None:
    """``Group._add_jobs`` without its EXEC. No ids means a bare ``SADD`` that Redis rejects, as in rq."""
    pipe.sadd(keys.group(name), *job_ids)
    pipe.sadd(keys.GROUPS, name)


async def enqueue_many(conn: Redis, name: str, buffer_jobs: BufferJobs, pipeline: Pipe | None = None) -> None:
    """``Group.enqueue_many``: the jobs and the group's two ``SADD`` in one MULTI.

    As in rq, a caller-supplied pipeline is executed here too (with whatever it held before).
    """
    pipe = pipeline if pipeline is not None else conn.pipeline(transaction=True)
    try:
        job_ids = await buffer_jobs(pipe)
        buffer_add_jobs(pipe, name, job_ids)
        await pipe.execute()
    finally:
        if pipeline is None:
            await pipe.reset()


async def exists(conn: Redis, name: str) -> bool:
    return bool(await conn.exists(keys.group(name)))


async def job_ids(conn: Redis, name: str) -> list[str]:
    return [as_text(i) for i in cast(set[bytes], await conn.smembers(keys.group(name)))]


async def remove_job(conn: Redis, name: str, job_id: str, pipeline: Pipe | None = None) -> None:
    """``Group.delete_job``: ``SREM`` in the caller's pipeline, or in a MULTI of its own."""
    if pipeline is not None:
        pipeline.srem(keys.group(name), job_id)
        return
    async with conn.pipeline(transaction=True) as pipe:
        pipe.srem(keys.group(name), job_id)
        await pipe.execute()


async def remove_jobs(conn: Redis, name: str, job_ids: Sequence[str]) -> None:
    if job_ids:
        await conn.srem(keys.group(name), *job_ids)


async def live_names(conn: Redis) -> list[str]:
    """``Group.all``: the names in ``rq:groups`` whose set exists; the others are ``SREM``-ed one by one."""
    names = []
    for raw in cast(set[bytes], await conn.smembers(keys.GROUPS)):
        name = as_text(raw)
        if await exists(conn, name):
            names.append(name)
        else:
            await conn.srem(keys.GROUPS, name)
    return names


async def forget_empty(conn: Redis, names: Sequence[str]) -> None:
    """The end of ``Group.clean_registries``: ``SREM`` from ``rq:groups`` the names whose set is gone."""
    if not names:
        return
    async with conn.pipeline(transaction=True) as pipe:
        for name in names:
            pipe.exists(keys.group(name))
        found = await pipe.execute()
    empty = [n for n, e in zip(names, found) if not e]
    if empty:
        await conn.srem(keys.GROUPS, *empty)


async def acquire_maintenance_lock(conn: Redis, timeout: int) -> bool:
    """The global, never-released group cleaning lock (``SET rq:clean_groups 1 NX EX timeout``)."""
    return bool(await conn.set(keys.CLEAN_GROUPS, 1, nx=True, ex=timeout))
