"""Worker maintenance under rq's locks: registries, the worker registry, intermediate lists
(rq-protocol §4.17, §4.18, §6.10)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

from redis.asyncio import Redis
from rq.utils import as_text

from . import groups, keys
from .defaults import STUCK_AFTER
from .registries import AbandonedHook, clean_registries

StuckHandler = Callable[[str, str], Awaitable[None]]


async def acquire_cleaning_lock(conn: Redis, queue_name: str) -> bool:
    return bool(await conn.set(keys.cleaning_lock(queue_name), 1, nx=True, ex=899))


async def release_cleaning_lock(conn: Redis, queue_name: str) -> None:
    await conn.delete(keys.cleaning_lock(queue_name))


async def clean_worker_registry(conn: Redis, queue_name: str) -> None:
    """Drop workers whose hash expired from ``rq:workers:<q>`` and ``rq:workers``."""
    members = sorted(as_text(k) for k in cast(set[bytes], await conn.smembers(keys.workers_by_queue(queue_name))))
    missing = await missing_keys(conn, members)
    for start in range(0, len(missing), 1000):
        chunk = missing[start : start + 1000]
        async with conn.pipeline(transaction=True) as pipe:
            pipe.srem(keys.workers_by_queue(queue_name), *chunk)
            pipe.srem(keys.WORKERS, *chunk)
            await pipe.execute()


async def clean_intermediate(conn: Redis, queue_name: str, on_stuck: StuckHandler) -> None:
    """Ids left in the intermediate list without an execution fail on the second sighting ≥ ``STUCK_AFTER`` s apart."""
    ids = [as_text(i) for i in cast(list[bytes], await conn.lrange(keys.intermediate(queue_name), 0, -1))]
    if not ids:
        return
    started = {
        as_text(m).split(':', 1)[0]
        for m in cast(list[bytes], await conn.zrange(keys.registry('started', queue_name), 0, -1))
    }
    for job_id in ids:
        exists = await conn.exists(keys.job(job_id))
        if not exists:
            await conn.lrem(keys.queue(queue_name), 1, job_id)
        if job_id in started:
            continue
        if not exists:
            await conn.lrem(keys.intermediate(queue_name), 1, job_id)
            continue
        first_seen_key = f'{keys.intermediate(queue_name)}:first_seen:{job_id}'
        if await conn.set(first_seen_key, time.time(), nx=True, ex=86400):
            continue
        first_seen = await conn.get(first_seen_key)
        if first_seen and time.time() - float(first_seen) > STUCK_AFTER:
            await on_stuck(queue_name, job_id)
            await conn.lrem(keys.intermediate(queue_name), 1, job_id)


async def maintain_queue(
    conn: Redis,
    queue_name: str,
    *,
    serializer: Any = None,
    on_abandoned: AbandonedHook | None = None,
    on_stuck: StuckHandler,
) -> bool:
    """One queue's maintenance pass, if this process wins the per-queue lock."""
    if not await acquire_cleaning_lock(conn, queue_name):
        return False
    try:
        await clean_registries(conn, queue_name, serializer=serializer, on_abandoned=on_abandoned)
        await clean_worker_registry(conn, queue_name)
        await clean_intermediate(conn, queue_name, on_stuck)
    finally:
        await release_cleaning_lock(conn, queue_name)
    return True


async def missing_keys(conn: Redis, candidates: list[str]) -> list[str]:
    """``rq.utils.missing_keys``: one multi-key ``EXISTS``, per key only if some are missing."""
    if not candidates or await conn.exists(*candidates) == len(candidates):
        return []
    async with conn.pipeline(transaction=False) as pipe:
        for key in candidates:
            pipe.exists(key)
        found = await pipe.execute()
    return [k for k, e in zip(candidates, found) if not e]


async def clean_group(conn: Redis, name: str) -> None:
    """``Group.cleanup``: drop the members whose job hash expired or was deleted."""
    members = {keys.job(job_id): job_id for job_id in await groups.job_ids(conn, name)}
    await groups.remove_jobs(conn, name, [members[k] for k in await missing_keys(conn, list(members))])


async def clean_all_groups(conn: Redis) -> None:
    """``Group.clean_registries``: forget vanished groups, clean the others, then forget the emptied."""
    names = await groups.live_names(conn)
    for name in names:
        await clean_group(conn, name)
    await groups.forget_empty(conn, names)


async def clean_groups(conn: Redis, maintenance_interval: int) -> bool:
    """Group maintenance under the global, never-released ``rq:clean_groups`` lock."""
    if not await groups.acquire_maintenance_lock(conn, max(int(maintenance_interval) - 1, 1)):
        return False
    await clean_all_groups(conn)
    return True
