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
from typing import TYPE_CHECKING

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError
from redis.exceptions import TimeoutError as RedisTimeoutError

import aiorq
from aiorq.connections import blocking_client
from aiorq.protocol import dequeue, finish, workers

if TYPE_CHECKING:
    from .worker import Worker

logger = logging.getLogger('aiorq.worker')

SUSPENSION_CHECK = 0.5  # seconds


class Admission:
    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self._ordered = list(worker.queue_names)
        self._suspension_checked = 0.0
        self._wake = asyncio.Event()
        self._blocking: Redis | None = None
        self._blocking_id: int | None = None
        self._blocked = False
        self._lost = False  # Redis failed us; the next call it answers counts as a reconnect

    def _answered(self) -> None:
        if self._lost:
            self._lost = False
            self.worker.reconnected()

    async def open(self) -> Redis:
        """The dedicated connection for blocking pops (no socket timeout: a pop may wait 405 s);
        same TLS, ACL user and Sentinel service as the worker's connection."""
        self._blocking = blocking_client(self.worker.connection)
        return self._blocking

    async def close(self) -> None:
        if self._blocking is not None:
            await self._blocking.aclose()

    def wake(self) -> None:
        self._wake.set()

    async def unblock(self) -> None:
        """Wake a pop blocked in Redis (``CLIENT UNBLOCK`` from another connection)."""
        if self._blocked and self._blocking_id is not None:
            try:
                await workers.unblock(self.worker.connection, self._blocking_id)
            except Exception:
                logger.debug('CLIENT UNBLOCK failed', exc_info=True)

    async def check_suspension(self, burst: bool) -> bool:
        """True while ``rq suspend`` is in force (state ``suspended`` when nothing runs).

        rq checks before every dequeue; under load that is a round trip per job, so a worker that
        is not suspended re-checks at most every ``SUSPENSION_CHECK`` seconds (the heartbeat
        thread keeps the worker alive meanwhile).
        """
        if not self.worker.suspended and time.monotonic() - self._suspension_checked < SUSPENSION_CHECK:
            return False
        self._suspension_checked = time.monotonic()
        ttl = self.worker.job_monitoring_interval + 60 if self.worker.executions else self.worker.worker_ttl + 60
        suspended = await workers.heartbeat_and_check_suspended(self.worker.connection, self.worker.name, ttl)
        if suspended and not self.worker.suspended:
            logger.info('Worker %s: suspended, run `rq resume` to resume', self.worker.name)
            if burst:
                logger.info('Worker %s: suspended in burst mode, exiting', self.worker.name)
        changed = suspended != self.worker.suspended
        self.worker.suspended = suspended
        if changed:
            await self.worker.status.write()
        return suspended

    def reorder(self, served: str) -> None:
        if self.worker.dequeue_strategy == 'round_robin':
            pos = self._ordered.index(served)
            self._ordered = self._ordered[pos + 1 :] + self._ordered[: pos + 1]
        elif self.worker.dequeue_strategy == 'random':
            random.shuffle(self._ordered)

    async def wait_for_slot(self) -> None:
        while self.worker.in_flight() >= self.worker.concurrency and not self.worker.stop_requested:
            self.worker.slot_freed.clear()
            await self.worker.slot_freed.wait()

    async def run(self, burst: bool, max_jobs: int | None, max_idle_time: int | None) -> int:
        admitted = 0
        backoff = 1.0
        idle_since = time.monotonic()
        while not self.worker.stop_requested:
            try:
                if await self.check_suspension(burst):
                    if burst:
                        break
                    await self._sleep(1)
                    continue
                await self.wait_for_slot()
                if self.worker.stop_requested:
                    break
                want = self.worker.concurrency - self.worker.in_flight()
                if max_jobs is not None:
                    want = min(want, max_jobs - admitted)
                served, claimed, waiting = await self.claim(want)
                if not served:
                    if self.worker.executions:
                        # Jobs are running: wait for one to end rather than block in Redis,
                        # so burst mode and max_jobs see the queue state after each finish.
                        if burst:
                            self.worker.slot_freed.clear()
                            await self.worker.slot_freed.wait()
                            continue
                    elif burst and not waiting:
                        break
                    await self.worker.status.write()
                    # A job enqueued after the claim's clock reading is waiting: the pop takes
                    # it at once (a job is never started before it was enqueued; see the claim).
                    timeout = 1 if waiting else max(1, self.worker.worker_ttl - 15)
                    if max_idle_time is not None:
                        if self.worker.executions:
                            # Idle time starts when the last job ends: look again each second.
                            timeout = 1
                        else:
                            # rq's rule: idle since the last job ended (or was taken, or the start).
                            idle_since = max(idle_since, self.worker.last_job_ended)
                            left = max_idle_time - (time.monotonic() - idle_since)
                            if left <= 0:
                                logger.info(
                                    'Worker %s: idle for %d seconds, quitting', self.worker.name, max_idle_time
                                )
                                break
                            timeout = max(1, min(timeout, int(left + 0.999)))
                    one = await self.blocking_pop(timeout, burst)
                    if one is None:
                        continue
                    # The block may have lasted long: suspension may have begun meanwhile. The
                    # watcher checked every second while blocked; this check keeps the usual
                    # staleness bound (SUSPENSION_CHECK) without a round trip per job.
                    if await self.check_suspension(burst) or self.worker.stop_requested:
                        # Popped while suspended or stopping: put it back rather than run it.
                        await dequeue.push_back(self.worker.connection, one[0], one[1], self.worker.single)
                        continue
                    served, claimed, _ = await self.claim(0, [one])
                backoff = 1.0
                admitted += claimed
                idle_since = time.monotonic()
                if served:
                    self.reorder(served[-1])
                if max_jobs is not None and admitted >= max_jobs:
                    logger.info('Worker %s: admitted %d jobs, quitting once they finish', self.worker.name, admitted)
                    break
            except (RedisConnectionError, RedisTimeoutError) as e:
                self._lost = True
                logger.error('Worker %s: Redis unreachable (%s); retrying in %.0fs', self.worker.name, e, backoff)
                await self._sleep(backoff)
                backoff = min(backoff * 2, 60)
            except OutOfMemoryError as e:
                # Nothing was written (Redis refuses a script's or a MULTI's first write whole).
                logger.error(
                    'Worker %s: Redis is out of memory, no job admitted (%s); retrying in %.0fs',
                    self.worker.name,
                    e,
                    backoff,
                )
                await self._sleep(backoff)
                backoff = min(backoff * 2, 60)
        return admitted

    async def _sleep(self, seconds: float) -> None:
        self._wake.clear()
        try:
            await asyncio.wait_for(self._wake.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    async def blocking_pop(self, timeout: float, burst: bool) -> tuple[str, str] | None:
        """Block in Redis for one id; suspension and shutdown wake it through ``CLIENT UNBLOCK``."""
        assert self._blocking is not None
        self._blocking_id = await workers.blocking_client_id(self._blocking)
        watcher = asyncio.ensure_future(self._watch_suspension())
        self._blocked = True
        try:
            if self.worker.stop_requested:
                return None
            return await dequeue.blocking_pop(self._blocking, self._ordered, timeout, self.worker.single)
        finally:
            self._blocked = False
            watcher.cancel()

    async def _watch_suspension(self) -> None:
        """While blocked in a pop, notice ``rq suspend`` within a second."""
        while True:
            await asyncio.sleep(1)
            if await aiorq.is_suspended(self.worker.connection):
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
        self.worker.claims_in_flight += 1
        try:
            executions, broken, served, waiting = await self._claim(want, known, exec_ids)
        finally:
            self.worker.claims_in_flight -= 1
        for queue_name, job_id, exec_id, error in broken:
            logger.error('%s: job %s cannot be read (%s); recorded as failed', queue_name, job_id, error)
            await finish.fail_unstarted(
                self.worker.connection,
                self.worker.name,
                queue_name,
                job_id,
                exec_id,
                f'Job {job_id} could not be read: {error!r}',
            )
        early = self.worker.early_stops
        loop = asyncio.get_running_loop()
        for ex in executions:
            self.worker.executions[ex.id] = ex
            self.worker.tasks[ex.id] = asyncio.ensure_future(self.worker.execute(ex))
            if ex.id in early or ex.job.id in early:
                # Stopped while this claim was in flight: once the execution has begun (its first
                # step runs before this callback), as if the command had come a moment later.
                logger.info('Job %s: stop requested while it was being started', ex.job.id)
                loop.call_soon(self.worker.stop_execution, ex.id)
        if not self.worker.claims_in_flight:
            early.clear()
        return served, len(executions) + len(broken), waiting

    async def _claim(
        self, want: int, known: list[tuple[str, str]], exec_ids: list[str]
    ) -> tuple[list[dequeue.Execution], list[tuple[str, str, str, Exception]], list[str], bool]:
        wait = 1.0
        uncertain = False
        while True:
            try:
                result = await dequeue.claim_executions(
                    self.worker.connection,
                    self.worker.name,
                    self._ordered,
                    exec_ids,
                    want=want,
                    known=known,
                    interval=self.worker.job_monitoring_interval,
                    single=self.worker.single,
                    serializer=self.worker.serializer,
                )
                self._answered()
                return result
            except (RedisConnectionError, RedisTimeoutError, OutOfMemoryError) as e:
                # A refusal wrote nothing: the caller backs off, unless an earlier send may
                # have been applied, whose jobs only this call can find again.
                if self.worker.cold_shutdown or (isinstance(e, OutOfMemoryError) and not uncertain):
                    raise
                uncertain = True
                self._lost = self._lost or not isinstance(e, OutOfMemoryError)
                logger.error(
                    'Worker %s: Redis unreachable while taking jobs (%s); asking again in %.0fs',
                    self.worker.name,
                    e,
                    wait,
                )
                await self._sleep(wait)
                wait = min(wait * 2, 60)
