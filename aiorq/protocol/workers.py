"""What the client reads of workers, and what it sends them: worker records, pub/sub
commands, suspension (rq-protocol §6.1, §6.4, §6.8, §6.9)."""

from __future__ import annotations

import json
from typing import Any, cast

from redis.asyncio import Redis
from rq.exceptions import InvalidJobOperation
from rq.utils import as_text, decode_redis_hash

from . import keys


class Subscription:
    """A pub/sub subscription to some channels (worker commands, scheduler wake-ups), on a
    connection of its own from the client's pool."""

    def __init__(self, conn: Redis, channels: list[str]) -> None:
        self.channels = channels
        self.pubsub = conn.pubsub()

    async def __aenter__(self) -> Subscription:
        await self.pubsub.subscribe(*self.channels)
        return self

    async def __aexit__(self, *_: object) -> None:
        try:
            await self.pubsub.aclose()
        except Exception:  # the connection is already gone
            pass

    async def next(self, timeout: float | None) -> dict[str, Any] | None:
        """The next message (``channel``, ``data``…), or None when none came within ``timeout``."""
        message = await self.pubsub.get_message(ignore_subscribe_messages=True, timeout=timeout)
        return cast(dict[str, Any] | None, message)


async def worker_keys(conn: Redis, queue_name: str | None = None) -> list[str]:
    key = keys.workers_by_queue(queue_name) if queue_name else keys.WORKERS
    return sorted(as_text(k) for k in await conn.smembers(key))


async def all_workers(conn: Redis, queue_name: str | None = None) -> list[tuple[str, dict[str, str]]]:
    """``Worker.all``: ``SMEMBERS``, then per key ``EXISTS`` (missing ⇒ ``SREM rq:workers``) and ``HGETALL``."""
    found = []
    for key in await worker_keys(conn, queue_name):
        if not await conn.exists(key):
            await conn.srem(keys.WORKERS, key)
            continue
        raw = await conn.hgetall(key)
        found.append((key[len(keys.WORKER_PREFIX) :], decode_redis_hash(raw, decode_values=True)))
    return found


async def count_workers(conn: Redis, queue_name: str | None = None) -> int:
    key = keys.workers_by_queue(queue_name) if queue_name else keys.WORKERS
    return int(await conn.scard(key))


async def worker_execution_members(conn: Redis, worker_name: str) -> list[str]:
    return sorted(as_text(m) for m in await conn.smembers(keys.worker_executions(worker_name)))


async def send_command(conn: Redis, worker_name: str, command: str, **kwargs: Any) -> None:
    payload = {'command': command}
    payload.update(kwargs)
    await conn.publish(keys.pubsub_channel(worker_name), json.dumps(payload))


async def send_stop_job_command(conn: Redis, job_id: str) -> None:
    """Routes by the job hash's ``worker_name``, as ``rq.command.send_stop_job_command``."""
    worker_name = await conn.hget(keys.job(job_id), 'worker_name')
    if not worker_name:
        raise InvalidJobOperation('Job is not currently executing')
    await send_command(conn, as_text(worker_name), 'stop-job', job_id=job_id)


async def send_stop_execution_command(conn: Redis, job_id: str, execution_id: str) -> None:
    worker_name = await conn.hget(keys.execution(job_id, execution_id), 'worker_name')
    if worker_name is None:
        raise InvalidJobOperation('Execution is not running')
    await send_command(conn, as_text(worker_name), 'stop-execution', job_id=job_id, execution_id=execution_id)


async def suspend(conn: Redis, ttl: int | None = None) -> None:
    await conn.set(keys.SUSPENDED, 1)
    if ttl is not None:
        await conn.expire(keys.SUSPENDED, ttl)


async def resume(conn: Redis) -> int:
    return int(await conn.delete(keys.SUSPENDED))


async def is_suspended(conn: Redis) -> bool:
    return bool(await conn.exists(keys.SUSPENDED))
