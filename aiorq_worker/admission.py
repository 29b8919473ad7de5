"""Admission: take a job only when a slot is free; block in Redis when the queues are empty.

No prefetch (an id never waits in the intermediate list without its execution records), queue
order and dequeue strategies as rq's, and a blocking pop that suspension and shutdown can wake
(``CLIENT UNBLOCK``) without losing the id it may have popped.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError
from redis.exceptions import TimeoutError as RedisTimeoutError

import aiorq
from aiorq.connections import blocking_client, dedicated_client
from aiorq.protocol import dequeue, workers

from .backoff import Backoff
from .execution import Execution
from .flags import Flags
from .inflight import InFlight
from .settings import Settings
from .status import StateKeeper

logger = logging.getLogger('aiorq.worker')

SUSPENSION_CHECK = 0.5  # seconds
POP_TTL_MARGIN = 15  # seconds: an idle blocking pop ends this long before the worker record expires
STOP = object()  # what an empty-queue wait returns when admission should end
Unstartable = Callable[[str, str, str, Exception], Awaitable[None]]  # queue, job id, execution id, why


class Admission:
    """Admits jobs for one worker: ``start(ex)`` runs each admitted execution (and adds it to
    ``inflight``), ``unstartable`` fails a claimed job that cannot be read, ``reconnected`` is
    told when Redis answers again after an outage. Writes ``flags.suspended``."""

    def __init__(
        self,
        settings: Settings,
        connection: Redis,
        inflight: InFlight,
        flags: Flags,
        status: StateKeeper,
        start: Callable[[Execution], None],
        unstartable: Unstartable,
        reconnected: Callable[[], None],
    ) -> None:
        self.settings = settings
        self.connection = connection
        self.inflight = inflight
        self.flags = flags
        self.status = status
        self.start = start
        self.unstartable = unstartable
        self.reconnected = reconnected
        self._ordered = list(settings.queue_names)
        self._suspension_checked = 0.0
        self._wake = asyncio.Event()
        self._blocking: Redis | None = None
        self._claims: Redis | None = None
        self._blocking_id: int | None = None
        self._blocked = False
        self._lost = False  # Redis failed us; the next call it answers counts as a reconnect
        self._idle_since = 0.0
        # The last claim found the queues empty: the next admission goes straight to the
        # blocking pop instead of first asking Redis again with a claim that would find nothing.
        self._drained = False
        self._unblock_owed = False  # an unblock asked for before the pop's connection id was known
        self.admitted = 0

    def _answered(self) -> None:
        if self._lost:
            self._lost = False
            self.reconnected()

    async def open(self) -> Redis:
        """The dedicated connection for blocking pops (no socket timeout: a pop may wait 405 s),
        and one for claims, so that a claim never waits behind the outcomes being written (one
        write at a time per client: with both on one, the worker and Redis took turns); same
        TLS, ACL user and Sentinel service as the worker's connection."""
        self._blocking = blocking_client(self.connection)
        self._claims = dedicated_client(self.connection)
        return self._blocking

    async def close(self) -> None:
        for client in (self._blocking, self._claims):
            if client is not None:
                await client.aclose()

    def wake(self) -> None:
        self._wake.set()

    async def unblock(self) -> None:
        """Wake a pop blocked in Redis (``CLIENT UNBLOCK`` from another connection); asked
        before the pop's connection id is known, it is sent as soon as it is."""
        if not self._blocked:
            return
        if self._blocking_id is None:
            self._unblock_owed = True
            return
        try:
            await workers.unblock(self.connection, self._blocking_id)
        except Exception:
            logger.debug('CLIENT UNBLOCK failed', exc_info=True)

    def _blocking_on(self, client_id: int) -> None:
        """The pop's connection id, known once Redis runs the pop (it came in the same write)."""
        self._blocking_id = client_id
        if self._unblock_owed:
            self._unblock_owed = False
            asyncio.ensure_future(self.unblock())

    async def check_suspension(self, burst: bool) -> bool:
        """True while ``rq suspend`` is in force (state ``suspended`` when nothing runs).

        rq checks before every dequeue; under load that is a round trip per job, so a worker that
        is not suspended re-checks at most every ``SUSPENSION_CHECK`` seconds (the heartbeat
        thread keeps the worker alive meanwhile).
        """
        flags, name = self.flags, self.settings.name
        if not flags.suspended and time.monotonic() - self._suspension_checked < SUSPENSION_CHECK:
            return False
        self._suspension_checked = time.monotonic()
        ttl = self.settings.busy_ttl if len(self.inflight) else self.settings.idle_ttl
        suspended = await workers.heartbeat_and_check_suspended(self.connection, name, ttl)
        if suspended and not flags.suspended:
            logger.info('Worker %s: suspended, run `rq resume` to resume', name)
            if burst:
                logger.info('Worker %s: suspended in burst mode, exiting', name)
        changed = suspended != flags.suspended
        flags.suspended = suspended
        if changed:
            await self.status.write()
        return suspended

    def reorder(self, served: str) -> None:
        if self.settings.dequeue_strategy == 'round_robin':
            pos = self._ordered.index(served)
            self._ordered = self._ordered[pos + 1 :] + self._ordered[: pos + 1]
        elif self.settings.dequeue_strategy == 'random':
            random.shuffle(self._ordered)

    async def run(self, burst: bool, max_jobs: int | None, max_idle_time: int | None) -> int:
        """Admit until stopped (or, in burst mode, until the queues are empty and nothing runs;
        or once ``max_jobs`` were admitted; or after ``max_idle_time`` idle seconds). Returns how
        many jobs were admitted."""
        self.admitted = 0
        self._idle_since = time.monotonic()
        backoff = Backoff()
        name = self.settings.name
        while not self.flags.stop_requested:
            try:
                if await self._step(burst, max_jobs, max_idle_time):
                    break
                backoff.reset()
            except (RedisConnectionError, RedisTimeoutError) as e:
                self._lost = True
                wait = backoff.next()
                logger.error('Worker %s: Redis unreachable (%s); retrying in %.0fs', name, e, wait)
                await self._sleep(wait)
            except OutOfMemoryError as e:
                # Nothing was written (Redis refuses a script's or a MULTI's first write whole).
                wait = backoff.next()
                logger.error(
                    'Worker %s: Redis is out of memory, no job admitted (%s); retrying in %.0fs', name, e, wait
                )
                await self._sleep(wait)
        return self.admitted

    async def _step(self, burst: bool, max_jobs: int | None, max_idle_time: int | None) -> bool:
        """One admission: wait for a slot, claim what it can; True when admission should end."""
        if await self.check_suspension(burst):
            if burst:
                return True
            await self._sleep(1)
            return False
        concurrency = self.settings.concurrency
        await self.inflight.wait_for_slot(concurrency, lambda: self.flags.stop_requested)
        if self.flags.stop_requested:
            return True
        want = concurrency - self.inflight.count()
        if max_jobs is not None:
            want = min(want, max_jobs - self.admitted)
        served: list[str] = []
        claimed, waiting = 0, False
        if self._drained and not burst:
            self._drained = False
        else:
            served, claimed, waiting = await self.claim(want)
        if not served:
            found = await self._wait_for_job(burst, waiting, max_idle_time, want)
            if found is STOP:
                return True
            if not isinstance(found, tuple):
                return False
            served, claimed = found
        self.admitted += claimed
        self._idle_since = time.monotonic()
        if served:
            self.reorder(served[-1])
        if max_jobs is not None and self.admitted >= max_jobs:
            logger.info('Worker %s: admitted %d jobs, quitting once they finish', self.settings.name, self.admitted)
            return True
        return False

    async def _wait_for_job(self, burst: bool, waiting: bool, max_idle_time: int | None, want: int) -> object:
        """The queues had nothing to claim: wait for a job (blocking in Redis when nothing runs)
        and claim it with up to ``want - 1`` more. Returns (queues served, jobs admitted), None
        to go round again, or :data:`STOP`."""
        if len(self.inflight):
            # Jobs are running: wait for one to end rather than block in Redis,
            # so burst mode and max_jobs see the queue state after each finish.
            if burst:
                await self.inflight.changed()
                return None
        else:
            if burst and not waiting:
                return STOP
            # Nothing runs: show ``idle`` before blocking (while jobs run, their claim wrote
            # ``busy``, and the state clock writes the change once the last one ends).
            await self.status.write()
        timeout = self._pop_timeout(waiting, max_idle_time)
        if timeout is None:
            return STOP
        one = await self.blocking_pop(timeout, burst)
        if one is None:
            return None
        # The block may have lasted long: suspension may have begun meanwhile. The
        # watcher checked every second while blocked; this check keeps the usual
        # staleness bound (SUSPENSION_CHECK) without a round trip per job.
        if await self.check_suspension(burst) or self.flags.stop_requested:
            # Popped while suspended or stopping: put it back rather than run it.
            await dequeue.push_back(self.connection, one[0], one[1], self.settings.single)
            return None
        # The popped id and up to want - 1 more in one call: fewer than asked means the queues
        # were empty a moment ago, so the next admission blocks at once (one round trip per job
        # on an idle worker, not two).
        served, claimed, waiting = await self.claim(want - 1, [one])
        self._drained = len(served) < want and not waiting
        return served, claimed

    def _pop_timeout(self, waiting: bool, max_idle_time: int | None) -> float | None:
        """How long a blocking pop may wait; None when the worker has been idle long enough."""
        # A job enqueued after the claim's clock reading is waiting: the pop takes
        # it at once (a job is never started before it was enqueued; see the claim).
        timeout = 1 if waiting else max(1, self.settings.worker_ttl - POP_TTL_MARGIN)
        if max_idle_time is None:
            return timeout
        if len(self.inflight):
            return 1  # idle time starts when the last job ends: look again each second
        # rq's rule: idle since the last job ended (or was taken, or the start).
        self._idle_since = max(self._idle_since, self.inflight.last_ended)
        left = max_idle_time - (time.monotonic() - self._idle_since)
        if left <= 0:
            logger.info('Worker %s: idle for %d seconds, quitting', self.settings.name, max_idle_time)
            return None
        return max(1, min(timeout, int(left + 0.999)))

    async def _sleep(self, seconds: float) -> None:
        self._wake.clear()
        try:
            await asyncio.wait_for(self._wake.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    async def blocking_pop(self, timeout: float, burst: bool) -> tuple[str, str] | None:
        """Block in Redis for one id; suspension and shutdown wake it through ``CLIENT UNBLOCK``."""
        assert self._blocking is not None
        self._blocking_id = None
        self._unblock_owed = False
        watcher = asyncio.ensure_future(self._watch_suspension())
        self._blocked = True
        try:
            if self.flags.stop_requested:
                return None
            return await dequeue.blocking_pop(
                self._blocking, self._ordered, timeout, self.settings.single, client_id=self._blocking_on
            )
        finally:
            self._blocked = False
            self._blocking_id = None
            watcher.cancel()

    async def _watch_suspension(self) -> None:
        """While blocked in a pop, notice ``rq suspend`` within a second."""
        while True:
            await asyncio.sleep(1)
            if await aiorq.is_suspended(self.connection):
                await self.unblock()
                return

    async def claim(self, want: int, known: list[tuple[str, str]] | None = None) -> tuple[list[str], int, bool]:
        """Pop up to ``want`` ids (and/or take the ``known`` ones a blocking pop took) and start
        them in one call. Returns the queue of each id taken, how many jobs were admitted, and
        whether a job enqueued after the call's clock reading was left for the next one.
        A connection error leaves the call's fate unknown (its reply may be all that was lost):
        it is sent again with the same execution ids until Redis answers, so a job it did start
        is run here, not left started with nobody running it."""
        known = known or []
        exec_ids = dequeue.new_execution_ids(len(known) + want)
        with self.inflight.claiming():
            claims, broken, served, waiting = await self._claim(want, known, exec_ids)
        for queue_name, job_id, exec_id, error in broken:
            await self.unstartable(queue_name, job_id, exec_id, error)
        for claimed in claims:
            self.start(Execution.claimed(claimed))
        self.inflight.claimed()
        return served, len(claims) + len(broken), waiting

    async def _claim(
        self, want: int, known: list[tuple[str, str]], exec_ids: dequeue.ExecutionIds
    ) -> tuple[list[dequeue.Claimed], list[dequeue.Broken], list[str], bool]:
        backoff = Backoff()
        uncertain = False
        settings = self.settings
        while True:
            try:
                result = await dequeue.claim_executions(
                    self._claims or self.connection,
                    settings.name,
                    self._ordered,
                    exec_ids,
                    want=want,
                    known=known,
                    interval=settings.job_monitoring_interval,
                    single=settings.single,
                    serializer=settings.serializer,
                )
                self._answered()
                return result
            except (RedisConnectionError, RedisTimeoutError, OutOfMemoryError) as e:
                # A refusal wrote nothing: the caller backs off, unless an earlier send may
                # have been applied, whose jobs only this call can find again.
                if self.flags.cold_shutdown or (isinstance(e, OutOfMemoryError) and not uncertain):
                    raise
                uncertain = True
                self._lost = self._lost or not isinstance(e, OutOfMemoryError)
                wait = backoff.next()
                logger.error(
                    'Worker %s: Redis unreachable while taking jobs (%s); asking again in %.0fs', settings.name, e, wait
                )
                await self._sleep(wait)
