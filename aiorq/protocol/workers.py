"""Workers (rq-protocol §6): a worker's own record (birth, death, heartbeats for it and its
executions, state), what the client reads of workers and sends them (pub/sub commands), and
suspension."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, NamedTuple, cast

from redis.asyncio import Redis
from redis.exceptions import ResponseError
from rq.exceptions import InvalidJobOperation
from rq.executions import Execution as RQExecution
from rq.utils import as_text, current_timestamp, decode_redis_hash, now, utcformat

from . import keys, scripts
from .codec import NOIO
from .defaults import DEATH_TTL, EXECUTIONS_SLACK, HEARTBEAT_SLACK, job_timeout

logger = logging.getLogger('aiorq.protocol')


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


async def find_worker(conn: Redis, worker_key: str) -> dict[str, str] | None:
    """``Worker.find_by_key``: a missing key is dropped from ``rq:workers`` (``None``); else the
    decoded hash (empty when it vanished between the two reads, as rq's ``refresh`` tolerates)."""
    if not await conn.exists(worker_key):
        await conn.srem(keys.WORKERS, worker_key)
        return None
    return decode_redis_hash(await conn.hgetall(worker_key), decode_values=True)


async def worker_hash(conn: Redis, name: str) -> dict[str, str]:
    """``Worker.refresh``'s read: the decoded ``rq:worker:<name>`` hash (empty if gone)."""
    return decode_redis_hash(await conn.hgetall(keys.worker(name)), decode_values=True)


async def worker_field(conn: Redis, name: str, field_name: str) -> str | None:
    value = await conn.hget(keys.worker(name), field_name)
    return None if value is None else as_text(value)


async def current_execution_count(conn: Redis, name: str) -> int:
    return int(await conn.scard(keys.worker_executions(name)))


async def current_executions(conn: Redis, name: str) -> list[RQExecution]:
    """``Worker.get_current_executions``: the executions index, each hash read in one pipeline;
    members whose hash expired are removed from the index, as rq does."""
    index = keys.worker_executions(name)
    members = [as_text(m) for m in await conn.smembers(index)]
    if not members:
        return []
    found = [RQExecution.from_composite_key(m, connection=NOIO) for m in members]
    async with conn.pipeline(transaction=True) as pipe:
        for execution in found:
            pipe.hgetall(execution.key)
        hashes = await pipe.execute()
    active = []
    stale = []
    for execution, data in zip(found, hashes):
        if not data:
            stale.append(execution.composite_key)
            continue
        execution.restore(data)
        active.append(execution)
    if stale:
        await conn.srem(index, *stale)
    return active


async def count_workers(conn: Redis, queue_name: str | None = None) -> int:
    key = keys.workers_by_queue(queue_name) if queue_name else keys.WORKERS
    return int(await conn.scard(key))


async def worker_execution_members(conn: Redis, worker_name: str) -> list[str]:
    return sorted(as_text(m) for m in await conn.smembers(keys.worker_executions(worker_name)))


async def send_command(conn: Redis, worker_name: str, command: str, **kwargs: Any) -> None:
    payload = {'command': command}
    payload.update(kwargs)
    await conn.publish(keys.pubsub_channel(worker_name), json.dumps(payload))


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


# -- a worker's own record: birth, death, heartbeats, state ----------------------------------

def heartbeat_ttl(timeout: Any, interval: int, working_time: float = 0.0) -> int:
    """``Worker.get_heartbeat_ttl``."""
    if timeout and timeout > 0:
        return int(min(timeout - working_time, interval)) + HEARTBEAT_SLACK
    return interval + HEARTBEAT_SLACK


class Beat(NamedTuple):
    """What a heartbeat needs of one execution in flight (§4.8)."""

    job_id: str
    execution_id: str
    queue: str
    started_at: datetime | None
    timeout: int | float | None  # the job's own (None: the default)

    @property
    def member(self) -> str:
        return f'{self.job_id}:{self.execution_id}'


# -- registration ------------------------------------------------------------------------


async def client_address(conn: Redis, name: str) -> str:
    """``CLIENT SETNAME`` then this connection's ``addr`` from ``CLIENT INFO`` (or ``unknown``)."""
    try:
        await conn.client_setname(name)
        info = await conn.execute_command('CLIENT', 'INFO')
        for part in as_text(info).split():
            if part.startswith('addr='):
                return part[5:]
    except Exception:
        pass
    return 'unknown'


async def eviction_policy(conn: Redis) -> str | None:
    """Redis's ``maxmemory-policy``, from ``INFO memory`` rather than ``CONFIG GET``: ACL users and
    managed Redis services that refuse ``CONFIG`` (which also reveals passwords) usually allow
    ``INFO``, which stock rq reads too. ``None`` when refused: that must not stop a worker."""
    try:
        info = await conn.info('memory')
    except ResponseError as e:
        logger.debug('maxmemory-policy unknown: INFO memory refused (%s)', e)
        return None
    policy = info.get('maxmemory_policy')
    return as_text(policy) if policy else None


async def register_birth(conn: Redis, name: str, queue_names: list[str], fields: dict[str, Any], ttl: int) -> None:
    """§6.2: refuse a live name; then one MULTI writes the record and both worker sets."""
    key = keys.worker(name)
    if await conn.exists(key) and not await conn.hexists(key, 'death'):
        raise ValueError(f'There exists an active worker named {name!r} already')
    async with conn.pipeline(transaction=True) as pipe:
        pipe.delete(key)
        pipe.hset(key, mapping=cast(dict[Any, Any], fields))
        pipe.sadd(keys.WORKERS, key)
        for q in queue_names:
            pipe.sadd(keys.workers_by_queue(q), key)
        pipe.expire(key, ttl)
        await pipe.execute()


async def register_death(conn: Redis, name: str, queue_names: list[str]) -> None:
    key = keys.worker(name)
    async with conn.pipeline(transaction=True) as pipe:
        pipe.srem(keys.WORKERS, key)
        for q in queue_names:
            pipe.srem(keys.workers_by_queue(q), key)
        pipe.hset(key, 'death', utcformat(now()))
        pipe.expire(key, DEATH_TTL)
        pipe.delete(keys.worker_executions(name))
        await pipe.execute()


def buffer_worker_heartbeat(pipe: Any, name: str, ttl: int) -> None:
    pipe.hset(keys.worker(name), 'last_heartbeat', utcformat(now()))
    pipe.expire(keys.worker(name), ttl)
    pipe.expire(keys.worker_executions(name), ttl)


async def set_state(conn: Redis, name: str, state: str) -> None:
    await conn.hset(keys.worker(name), 'state', state)


# The worker's state follows its executions index: ``busy`` while it has a member, else the
# given idle state (``idle`` or ``suspended``). Decided inside Redis, so a state write can never
# land after, and contradict, a start or a finish that changed the index meanwhile.
# KEYS: worker, worker executions. ARGV: the state when no execution runs.
STATE_SCRIPT = """
local state = ARGV[1]
if redis.call('SCARD', KEYS[2]) > 0 then state = 'busy' end
redis.call('HSET', KEYS[1], 'state', state)
return state
"""


def buffer_state(pipe: Any, name: str, idle_state: str) -> None:
    """:data:`STATE_SCRIPT` in a MULTI (``EVAL``: a MULTI cannot load a missing script)."""
    pipe.eval(STATE_SCRIPT, 2, keys.worker(name), keys.worker_executions(name), idle_state)


async def assert_state(conn: Redis, name: str, idle_state: str) -> str:
    """Write ``busy``, or ``idle_state`` when the executions index is empty; returns which."""
    state = await scripts.run(conn, STATE_SCRIPT, [keys.worker(name), keys.worker_executions(name)], [idle_state])
    return as_text(state)


async def set_field(conn: Redis, name: str, field_name: str, value: Any) -> None:
    await conn.hset(keys.worker(name), field_name, value)


async def heartbeat_and_check_suspended(conn: Redis, name: str, ttl: int) -> bool:
    """The work loop's suspension check: heartbeat and ``EXISTS rq:suspended`` in one MULTI."""
    async with conn.pipeline(transaction=True) as pipe:
        buffer_worker_heartbeat(pipe, name, ttl)
        pipe.exists(keys.SUSPENDED)
        return bool((await pipe.execute())[-1])


def heartbeat_commands(
    pipe: Any, worker_name: str, executions: Sequence[Beat], interval: int, stamp: datetime | None = None
) -> None:
    """§4.8 for each execution: six commands, the job's ``HSET`` last (the caller adds the
    worker's own heartbeat); ``stamp``: the beat's time (default now)."""
    stamp = stamp or now()
    nowi = current_timestamp()
    for ex in executions:
        working = (stamp - ex.started_at).total_seconds() if ex.started_at else 0.0
        ttl = heartbeat_ttl(job_timeout(ex.timeout), interval, working)
        pipe.hset(keys.execution(ex.job_id, ex.execution_id), 'last_heartbeat', stamp.timestamp())
        pipe.expire(keys.execution(ex.job_id, ex.execution_id), ttl)
        pipe.zadd(keys.registry('started', ex.queue), {ex.member: nowi + ttl}, xx=True)
        pipe.zadd(keys.executions(ex.job_id), {ex.execution_id: nowi + ttl + EXECUTIONS_SLACK}, xx=True)
        pipe.expire(keys.executions(ex.job_id), ttl + EXECUTIONS_SLACK)
        pipe.hset(keys.job(ex.job_id), 'last_heartbeat', utcformat(stamp))


def heartbeat_sync(
    conn: Any,
    worker_name: str,
    executions: Sequence[Beat],
    *,
    interval: int,
    idle_ttl: int,
    state: str,
    base_fields: Callable[[], dict[str, Any]],
    queue_names: Sequence[str] = (),
    stamp: datetime | None = None,
) -> bool:
    """One heartbeat MULTI on a blocking client (the worker's heartbeat thread): the worker's
    record, its state re-asserted (``state`` is the one to show when no execution runs), and
    §4.8 for each execution. An ``HSET`` that created a hash
    means the hash had expired or been deleted: a job's is removed again, the worker's rebuilt
    and put back in the worker sets (Redis lost its data, or the record expired during an
    outage and maintenance dropped it). Returns whether the worker was registered again."""
    ttl = interval + HEARTBEAT_SLACK if executions else idle_ttl
    with conn.pipeline(transaction=True) as pipe:
        buffer_worker_heartbeat(pipe, worker_name, ttl)
        buffer_state(pipe, worker_name, state)
        heartbeat_commands(pipe, worker_name, executions, interval, stamp)
        # The record's own field: the work loop's heartbeat (heartbeat_and_check_suspended) may
        # have recreated the hash first, so our HSET creating it is not the only sign of a loss.
        pipe.hexists(keys.worker(worker_name), 'birth')
        results = pipe.execute()
    # Four worker-level commands come first, then six per execution, the job's HSET last.
    recreated_jobs = [ex for i, ex in enumerate(executions) if results[4 + i * 6 + 5] == 1]
    gone = results[0] == 1 or not results[-1]
    if not gone and not recreated_jobs:
        return False
    with conn.pipeline(transaction=True) as pipe:
        for ex in recreated_jobs:
            pipe.delete(keys.job(ex.job_id))
        if gone:
            key = keys.worker(worker_name)
            pipe.hset(key, mapping=cast(dict[Any, Any], base_fields()))
            pipe.expire(key, ttl)
            pipe.sadd(keys.WORKERS, key)
            for q in queue_names:
                pipe.sadd(keys.workers_by_queue(q), key)
        pipe.execute()
    return gone


async def unblock(conn: Redis, client_id: int) -> None:
    """``CLIENT UNBLOCK``: wake a pop blocked on another connection (it returns as if timed out)."""
    await conn.client_unblock(client_id)

