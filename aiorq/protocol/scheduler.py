"""rq 3.0's scheduler protocol (rq-protocol §7): per-queue locks, the scheduler record, and
moving due jobs from ``rq:scheduled:<q>`` onto their queues exactly as ``RQScheduler`` does."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from redis.asyncio import Redis
from redis.exceptions import WatchError
from rq.job import Job as RQJob
from rq.queue import Queue as RQQueue
from rq.scripts import ACQUIRE_OR_REFRESH_LOCK_SCRIPT, RELEASE_LOCK_SCRIPT
from rq.utils import as_text, now, utcformat

from . import keys, scripts
from .codec import restore_job
from .enqueue import buffer_enqueue, enqueue_rate_limited
from .workers import Subscription

logger = logging.getLogger('aiorq.protocol')

# rq's scheduler runs its loop every second and gives its locks and record that interval + 60 s.
INTERVAL = 1
LOCK_TTL = INTERVAL + 60
# RQScheduler.enqueue_scheduled_jobs reads at most this many due ids per queue and pass.
CHUNK = 1000
ACQUIRED, REFRESHED, TAKEN = 1, 2, 0


async def acquire_or_refresh(conn: Redis, name: str, queue_names: Sequence[str]) -> dict[str, int]:
    """rq's lock script per queue: 1 acquired, 2 refreshed (already ours), 0 held by another."""
    outcome = {}
    for q in queue_names:
        lock = [keys.scheduler_lock(q)]
        outcome[q] = int(await scripts.run(conn, ACQUIRE_OR_REFRESH_LOCK_SCRIPT, lock, [name, LOCK_TTL]))
    return outcome


def record(name: str, queue_names: Sequence[str], created_at: str) -> dict[str, str]:
    """The ``rq:scheduler:<name>`` hash of ``RQScheduler.to_dict`` (this process is the scheduler)."""
    stamp = utcformat(now())
    return {
        'name': name,
        'hostname': socket.gethostname(),
        'pid': str(os.getpid()),
        'queues': ','.join(queue_names),
        'created_at': created_at,
        'last_heartbeat': stamp,
    }


async def register_birth(conn: Redis, fields: dict[str, str]) -> None:
    """``RQScheduler.register_birth``: the record and its TTL in one MULTI."""
    async with conn.pipeline(transaction=True) as pipe:
        pipe.hset(keys.scheduler(fields['name']), mapping=cast(dict[Any, Any], fields))
        pipe.expire(keys.scheduler(fields['name']), LOCK_TTL)
        await pipe.execute()


async def heartbeat(conn: Redis, name: str, held: Sequence[str]) -> dict[str, int]:
    """``RQScheduler.heartbeat``: record heartbeat and TTL, then the lock script per held lock,
    in one MULTI. Returns the script's outcome per queue (0 means the lock was taken over)."""
    held = sorted(held)
    sha = scripts.sha(ACQUIRE_OR_REFRESH_LOCK_SCRIPT)
    if held and not (await conn.script_exists(sha))[0]:
        await conn.script_load(ACQUIRE_OR_REFRESH_LOCK_SCRIPT)
    async with conn.pipeline(transaction=True) as pipe:
        pipe.hset(keys.scheduler(name), 'last_heartbeat', utcformat(now()))
        pipe.expire(keys.scheduler(name), LOCK_TTL)
        for q in held:
            pipe.evalsha(sha, 1, keys.scheduler_lock(q), name, LOCK_TTL)
        results = await pipe.execute()
    return {q: int(r) for q, r in zip(held, results[2:])}


async def release(conn: Redis, name: str, held: Sequence[str]) -> None:
    """``RQScheduler.stop``: release each lock still ours, then ``DEL`` the record."""
    for q in held:
        await scripts.run(conn, RELEASE_LOCK_SCRIPT, [keys.scheduler_lock(q)], [name])
    await conn.delete(keys.scheduler(name))


class Wakeups(Subscription):
    """The wake-up hints of :func:`aiorq.protocol.enqueue.buffer_wakeup` for some queues."""

    def __init__(self, conn: Redis, queue_names: Sequence[str]) -> None:
        self.queues = {keys.scheduler_wakeup(q): q for q in queue_names}
        super().__init__(conn, list(self.queues))

    async def __aenter__(self) -> Wakeups:
        await super().__aenter__()
        return self

    async def hint(self, timeout: float) -> tuple[str, int] | None:
        """(queue, due second) of the next hint, or None when none came within ``timeout``."""
        message = await self.next(timeout)
        if message is None:
            return None
        q = self.queues.get(as_text(message['channel']))
        try:
            due = int(message['data'])
        except (TypeError, ValueError):
            return None
        return None if q is None else (q, due)


async def earliest(conn: Redis, queue_names: Sequence[str]) -> dict[str, int | None]:
    """The earliest due second in each queue's scheduled registry (one pipeline)."""
    async with conn.pipeline(transaction=False) as pipe:
        for q in queue_names:
            pipe.zrange(keys.registry('scheduled', q), 0, 0, withscores=True)
        rows = await pipe.execute()
    return {q: int(row[0][1]) if row else None for q, row in zip(queue_names, rows)}


@dataclass
class Moved:
    """What one pass over a queue did."""

    queued: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unreadable: list[tuple[str, Exception]] = field(default_factory=list)
    lost_lock: bool = False


async def move_due(
    conn: Redis,
    name: str,
    queue_name: str,
    timestamp: int,
    *,
    serializer: Any = None,
    skip: Sequence[str] = (),
) -> Moved:
    """``RQScheduler.enqueue_scheduled_jobs`` for one queue: the due ids (``ZRANGEBYSCORE 0
    <int now> LIMIT 0 1000``), their hashes in one MULTI, then one MULTI for every plain job
    (4.1 step 3, each followed by its own ``ZREM``, then ``ZREM`` of vanished ids) and one per
    rate-limited job (``ZREM`` + the limiter enqueue of §9.2).

    Stronger than rq: the transactions ``WATCH`` this queue's lock and the job hashes, so a
    scheduler whose lock was taken over meanwhile, or a job changed (canceled, deleted) between
    the read and the write, moves nothing; ``skip`` holds ids known to be unreadable.
    """
    moved = Moved()
    registry = keys.registry('scheduled', queue_name)
    lock = keys.scheduler_lock(queue_name)
    for _ in range(5):
        async with conn.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(lock)
                if as_text(await pipe.get(lock) or b'') != name:
                    moved.lost_lock = True
                    return moved
                due = cast(list[bytes], await pipe.zrangebyscore(registry, 0, timestamp, start=0, num=CHUNK))
                ids = [as_text(i) for i in due]
                ids = [i for i in ids if i not in skip]
                if not ids:
                    return moved
                await pipe.watch(*[keys.job(i) for i in ids])
                # Canceled or moved by someone between the read and the WATCH: not ours to move.
                scores = await pipe.zmscore(registry, ids)
                ids = [i for i, s in zip(ids, scores) if s is not None]
                plain, limited = _restore_due(ids, await _hashes(conn, ids), serializer, moved)
                if plain or moved.missing:
                    pipe.multi()
                    for job in plain:
                        buffer_enqueue(pipe, job, queue_name, RQQueue.DEFAULT_TIMEOUT, job.should_enqueue_at_front())
                        pipe.zrem(registry, job.id)
                    if moved.missing:
                        pipe.zrem(registry, *moved.missing)
                    await pipe.execute()
                    moved.queued += [j.id for j in plain]
            except WatchError:
                moved = Moved()
                continue
        for job in limited:
            if await _move_rate_limited(conn, name, queue_name, job):
                moved.queued.append(job.id)
        return moved
    logger.warning('Scheduler %s: %s kept changing under the move; retrying on the next pass', name, queue_name)
    return moved


def _restore_due(
    ids: list[str], raws: list[dict[bytes, bytes]], serializer: Any, moved: Moved
) -> tuple[list[RQJob], list[RQJob]]:
    """The due jobs as (plain, rate-limited); vanished and unreadable ids are noted in ``moved``."""
    plain: list[RQJob] = []
    limited: list[RQJob] = []
    for job_id, raw in zip(ids, raws):
        if not raw:
            moved.missing.append(job_id)
            continue
        try:
            job = restore_job(job_id, raw, serializer)
        except Exception as e:  # an unknown status, a malformed field
            moved.unreadable.append((job_id, e))
            continue
        (limited if job.has_rate_limit else plain).append(job)
    return plain, limited


async def _hashes(conn: Redis, ids: list[str]) -> list[dict[bytes, bytes]]:
    # ``Job.fetch_many``: the hashes in one MULTI, on another connection than the WATCH.
    async with conn.pipeline(transaction=True) as pipe:
        for job_id in ids:
            pipe.hgetall(keys.job(job_id))
        return cast(list[dict[bytes, bytes]], await pipe.execute())


async def _move_rate_limited(conn: Redis, name: str, queue_name: str, job: RQJob) -> bool:
    registry = keys.registry('scheduled', queue_name)
    async with conn.pipeline(transaction=True) as pipe:
        try:
            await pipe.watch(keys.scheduler_lock(queue_name), keys.job(job.id))
            if as_text(await pipe.get(keys.scheduler_lock(queue_name)) or b'') != name:
                return False
            if await pipe.zscore(registry, job.id) is None:
                return False
            pipe.multi()
            pipe.zrem(registry, job.id)
            await enqueue_rate_limited(
                conn, job, queue_name, RQQueue.DEFAULT_TIMEOUT, at_front=job.should_enqueue_at_front(), pipeline=pipe
            )
            await pipe.execute()
            return True
        except WatchError:
            return False
