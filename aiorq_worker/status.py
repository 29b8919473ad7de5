"""The worker-state clock: ``busy`` exactly while an execution runs, ``idle`` (or ``suspended``)
within a moment of the last one ending, so ``rq info`` and rq-dashboard tell the truth.

Reads: nothing but the idle state it is given. Changes: the ``state`` field of the worker hash,
through a script that decides ``busy`` from the executions index inside Redis.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from redis.asyncio import Redis

from aiorq.protocol import workers

logger = logging.getLogger('aiorq.worker')


class StateKeeper:
    # Seconds a change must hold before it is written: a worker under load whose last job ends
    # starts the next one at once (its start already writes ``busy``), so no write is owed then.
    SETTLE = 0.2

    def __init__(
        self, connection: Redis, name: str, idle_state: Callable[[], str], running: Callable[[], bool]
    ) -> None:
        self.connection = connection
        self.name = name
        self.idle_state = idle_state
        self.running = running
        self._changed = asyncio.Event()
        self._stopping = False

    def poke(self) -> None:
        """Something that decides the state changed (last execution ended, suspension)."""
        self._changed.set()

    async def write(self) -> str:
        return await workers.assert_state(self.connection, self.name, self.idle_state())

    def stop(self) -> None:
        # A flag, not only Task.cancel(): redis-py may swallow a cancellation that arrives while
        # a command is in flight, and the loop must end all the same.
        self._stopping = True
        self._changed.set()

    async def run(self) -> None:
        while not self._stopping:
            await self._changed.wait()
            self._changed.clear()
            await asyncio.sleep(self.SETTLE)
            if self._stopping:
                return
            if self.running():
                continue  # a job started meanwhile, and its start wrote ``busy``
            try:
                await self.write()
            except Exception as e:  # Redis away: the heartbeat re-asserts it too; try again soon
                logger.debug('Worker %s: could not write its state (%s)', self.name, e)
                await asyncio.sleep(1)
                self._changed.set()
