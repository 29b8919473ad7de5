"""The worker's throughput history for the dashboard's chart (see :mod:`aiorq.protocol.stats`).

Ending a job only counts it in memory (:meth:`ThroughputRecorder.job_ended`, on the loop, no
I/O); :meth:`ThroughputRecorder.run` flushes the counts every ``interval`` seconds in one
transaction. A flush that fails keeps its counts for the next one, so an outage loses nothing
that is still on the chart; counts older than the history's own lifetime are dropped then.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from aiorq.protocol import stats

logger = logging.getLogger('aiorq.worker')

FLUSH_INTERVAL = 1.0


class ThroughputRecorder:
    """Counts finished and failed jobs per queue and minute, and writes them every ``interval`` s."""

    def __init__(
        self, connection: Redis, interval: float = FLUSH_INTERVAL, clock: Callable[[], float] = time.time
    ) -> None:
        self.connection = connection
        self.interval = interval
        self.clock = clock
        self.pending: Counter[tuple[int, str, str]] = Counter()

    def job_ended(self, queue_name: str, kind: str) -> None:
        """One job of ``queue_name`` ended as ``kind`` (``finished`` or ``failed``), now."""
        stats.field_name(kind, queue_name)  # refuses an unknown kind here, not at the flush
        self.pending[(stats.minute_of(self.clock()), queue_name, kind)] += 1

    async def flush(self) -> int:
        """Write the pending counts (one MULTI); returns how many jobs they counted. On an error
        the counts are kept for the next flush and the error is raised."""
        if not self.pending:
            return 0
        counts, self.pending = self.pending, Counter()
        try:
            await stats.write_counts(self.connection, counts)
        except BaseException:
            self._keep(counts)
            raise
        return sum(counts.values())

    def _keep(self, counts: Counter[tuple[int, str, str]]) -> None:
        """Put unwritten counts back, except those whose minute has left the history anyway."""
        oldest = stats.minute_of(self.clock() - stats.TTL)
        for key, n in counts.items():
            if key[0] >= oldest:
                self.pending[key] += n

    async def run(self, stop: asyncio.Event) -> None:
        """Flush every ``interval`` seconds until ``stop`` is set, then once more."""
        while True:
            if not stop.is_set():
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.interval)
            # Read before the flush: a count added while it is sent gets one more flush.
            last = stop.is_set()
            try:
                await self.flush()
            except (RedisError, OSError) as e:
                logger.warning('Throughput history not written (kept for the next try): %s', e)
            if last:
                return
