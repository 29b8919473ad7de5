"""The maintenance clock: at start-up and every ``maintenance_interval`` seconds, idle or busy,
under rq's locks (shared with stock workers through the protocol layer): abandoned executions,
registries, worker sets, the intermediate list, groups (rq-protocol §4.17, §4.18, §6.10).

Reads and changes only Redis; what to do with an abandoned or stuck job (callbacks, exception
handlers, the failure write) is handed in by the worker.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq.job import Job as RQJob

from aiorq.protocol import maintenance

from .backoff import Backoff

logger = logging.getLogger('aiorq.worker')

AbandonedHook = Callable[[RQJob], Awaitable[None]]
StuckHook = Callable[[str, str], Awaitable[None]]


class Maintenance:
    def __init__(
        self,
        connection: Redis,
        queue_names: Sequence[str],
        interval: float,
        *,
        serializer: Any = None,
        on_abandoned: AbandonedHook | None = None,
        on_stuck: StuckHook,
        label: str = '',
    ) -> None:
        self.connection = connection
        self.queue_names = list(queue_names)
        self.interval = interval
        self.serializer = serializer
        self.on_abandoned = on_abandoned
        self.on_stuck = on_stuck
        self.label = label
        self.passes = 0
        self._stop = asyncio.Event()

    def stop(self) -> None:
        """End :meth:`run` (a flag as well as the task's cancellation: redis-py may swallow one)."""
        self._stop.set()

    async def run_once(self) -> None:
        """One pass over every queue (each only if this process wins its lock), then groups."""
        for queue_name in self.queue_names:
            try:
                await maintenance.maintain_queue(
                    self.connection,
                    queue_name,
                    serializer=self.serializer,
                    on_abandoned=self.on_abandoned,
                    on_stuck=self.on_stuck,
                )
            except (RedisConnectionError, RedisTimeoutError):
                raise
            except Exception:
                logger.exception('Worker %s: maintenance of %s failed', self.label, queue_name)
        try:
            await maintenance.clean_groups(self.connection, int(self.interval))
        except (RedisConnectionError, RedisTimeoutError):
            raise
        except Exception:
            logger.exception('Worker %s: group maintenance failed', self.label)
        self.passes += 1

    async def run(self) -> None:
        """Every ``interval`` seconds until stopped; a pass that cannot reach Redis is retried
        sooner (with backoff), not skipped until the next interval."""
        backoff = Backoff()
        delay = self.interval  # the first pass ran at start-up (see Worker.start_clocks)
        while not self._stop.is_set():
            try:
                await asyncio.wait_for(self._stop.wait(), delay)
                return
            except asyncio.TimeoutError:
                pass
            try:
                await self.run_once()
                backoff.reset()
                delay = self.interval
            except (RedisConnectionError, RedisTimeoutError) as e:
                delay = min(backoff.next(), self.interval)
                logger.error('Worker %s: maintenance cannot reach Redis (%s); retry in %.0fs', self.label, e, delay)
