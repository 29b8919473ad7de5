"""The scheduler clock (``aiorq worker --with-scheduler``): rq 3.0's scheduler protocol, as a task.

It takes rq's per-queue locks, so a fleet of stock ``rq worker --with-scheduler`` and aiorq
schedulers moves each due job exactly once. Where rq looks once a second, this task sleeps until
the earliest due second it knows of: aiorq's clients and workers publish a wake-up hint when they
schedule a job, and a poll every second (what rq does) finds jobs scheduled by anyone else.

Reads: the queues' scheduled registries and locks. Changes: its locks, its ``rq:scheduler:<name>``
record, and due jobs (moved onto their queues). It knows nothing of the worker around it.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq.utils import current_timestamp, now, utcformat

from aiorq.protocol import scheduler as ps

from .backoff import Backoff

logger = logging.getLogger('aiorq.scheduler')


class Scheduler:
    POLL = 1.0  # seconds: as rq, for jobs scheduled by clients that send no wake-up
    HEARTBEAT = 5.0  # seconds between record/lock refreshes (their TTL is 61 s)
    LOCK_RETRY = 5.0  # seconds between attempts at locks held by other schedulers
    UNREADABLE_RETRY = 60.0  # seconds before an unreadable scheduled job is looked at again
    EARLY = 0.002  # seconds past the due second, so ``int(now)`` has reached it
    BACKOFF_CAP = 30.0  # seconds: the longest wait for Redis (its locks live 61 s)

    def __init__(
        self, connection: Redis, queue_names: Sequence[str], *, serializer: Any = None, name: str | None = None
    ) -> None:
        self.connection = connection
        self.queue_names = list(dict.fromkeys(queue_names))
        self.serializer = serializer
        self.name = name or uuid.uuid4().hex
        self.created_at = utcformat(now())
        self.held: set[str] = set()
        self.registered = False
        self.next_due: dict[str, int | None] = {}
        self.unreadable: dict[str, float] = {}
        self.moved = 0
        self._wake = asyncio.Event()
        self._stopping = False

    def __repr__(self) -> str:
        return f'<aiorq Scheduler {self.name} holding {sorted(self.held)}>'

    # -- locks and record ----------------------------------------------------------------------

    async def acquire(self) -> None:
        """Try the locks this scheduler does not hold; write the record once it holds one."""
        missing = [q for q in self.queue_names if q not in self.held]
        for q, outcome in (await ps.acquire_or_refresh(self.connection, self.name, missing)).items():
            if outcome != ps.TAKEN:
                logger.info('Scheduler %s: acquired the scheduler lock for %s', self.name, q)
                self.held.add(q)
        if self.held and not self.registered:
            await ps.register_birth(self.connection, ps.record(self.name, self.queue_names, self.created_at))
            self.registered = True

    async def heartbeat(self) -> None:
        outcome = await ps.heartbeat(self.connection, self.name, sorted(self.held))
        for q, result in outcome.items():
            if result == ps.TAKEN:
                logger.warning('Scheduler %s: the lock for %s was taken over by another scheduler', self.name, q)
                self.held.discard(q)
            elif result == ps.ACQUIRED:
                logger.warning('Scheduler %s: the lock for %s had expired; re-acquired', self.name, q)

    async def release(self) -> None:
        """Release the locks still ours and delete the record (``RQScheduler.stop``)."""
        if not self.registered and not self.held:
            return
        held, self.held = sorted(self.held), set()
        logger.info('Scheduler %s: stopping, releasing locks for %s', self.name, ', '.join(held) or 'no queue')
        await ps.release(self.connection, self.name, held)
        self.registered = False

    # -- moving due jobs -------------------------------------------------------------------------

    async def enqueue_due(self, queue_names: Sequence[str] | None = None) -> int:
        """Move every due job of the held queues onto its queue; returns how many moved."""
        timestamp = current_timestamp()
        clock = time.monotonic()
        skip = [i for i, retry_at in self.unreadable.items() if retry_at > clock]
        total = 0
        for q in sorted(self.held if queue_names is None else set(queue_names) & self.held):
            moved = await ps.move_due(
                self.connection, self.name, q, timestamp, serializer=self.serializer, skip=skip
            )
            if moved.lost_lock:
                logger.warning('Scheduler %s: lost the lock for %s', self.name, q)
                self.held.discard(q)
            for job_id, error in moved.unreadable:
                logger.error(
                    'Scheduler %s: scheduled job %s on %s cannot be read (%s); left in the scheduled registry',
                    self.name,
                    job_id,
                    q,
                    error,
                )
                self.unreadable[job_id] = clock + self.UNREADABLE_RETRY
            if moved.missing:
                logger.info('Scheduler %s: dropped %d vanished ids from %s', self.name, len(moved.missing), q)
            if moved.queued:
                logger.debug('Scheduler %s: moved %d jobs onto %s', self.name, len(moved.queued), q)
            total += len(moved.queued)
        self.moved += total
        return total

    async def run_once(self) -> int:
        """Burst mode, as rq's: take the locks, one pass, release them."""
        await self.acquire()
        try:
            return await self.enqueue_due() if self.held else 0
        finally:
            await self.release()

    # -- the clock ---------------------------------------------------------------------------------

    def stop(self) -> None:
        """End :meth:`run` (a flag as well as the task's cancellation: redis-py may swallow one)."""
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        """Serve until stopped; the caller then awaits :meth:`release`."""
        listener = asyncio.ensure_future(self._listen())
        last_try = last_beat = -float('inf')
        backoff = Backoff(cap=self.BACKOFF_CAP)
        try:
            while not self._stopping:
                delay = self.POLL
                try:
                    clock = time.monotonic()
                    if len(self.held) < len(self.queue_names) and clock - last_try >= self.LOCK_RETRY:
                        last_try = clock
                        await self.acquire()
                    if self.held and clock - last_beat >= self.HEARTBEAT:
                        last_beat = clock
                        await self.heartbeat()
                    if self.held:
                        due = [q for q, d in self.next_due.items() if d is not None and d <= current_timestamp()]
                        moved = 0
                        if due or not self.next_due:
                            moved = await self.enqueue_due(due or None)
                        self.next_due = await ps.earliest(self.connection, sorted(self.held))
                        delay = self._delay(progress=moved > 0)
                    backoff.reset()
                except (RedisConnectionError, RedisTimeoutError) as e:
                    delay = backoff.next()
                    logger.error('Scheduler %s: Redis unreachable (%s); retrying in %.0fs', self.name, e, delay)
                except Exception:
                    logger.exception('Scheduler %s: pass failed; retrying', self.name)
                    delay = self.POLL
                await self._sleep(delay)
        finally:
            listener.cancel()

    def _delay(self, progress: bool) -> float:
        """Until the earliest known due second, but no longer than the poll. Jobs still due
        after a pass that moved some (more than one chunk) are taken at once; due ones that
        could not move (unreadable) wait for the poll."""
        wall = time.time()
        delay = self.POLL
        for d in self.next_due.values():
            if d is None:
                continue
            if d > int(wall):
                delay = min(delay, d + self.EARLY - wall)
            elif progress:
                delay = 0.0
        return delay

    async def _sleep(self, seconds: float) -> None:
        if self._stopping:
            return
        self._wake.clear()
        try:
            await asyncio.wait_for(self._wake.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    async def _listen(self) -> None:
        """Wake-up hints: a job due at some second was just scheduled on one of the queues."""
        while not self._stopping:
            try:
                async with ps.Wakeups(self.connection, self.queue_names) as hints:
                    while not self._stopping:
                        hint = await hints.hint(timeout=1.0)
                        if hint is None:
                            continue
                        q, due = hint
                        if q in self.held:
                            known = self.next_due.get(q)
                            self.next_due[q] = due if known is None else min(known, due)
                            self._wake.set()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                logger.debug('Scheduler %s: wake-up subscription lost (%s); polling meanwhile', self.name, e)
                await asyncio.sleep(1)
