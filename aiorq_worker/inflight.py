"""The one owner of the executions in flight: admission adds them, the runner ends them, the
commands look them up to stop them, and the heartbeat thread reads a snapshot of them."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from aiorq.protocol.workers import Beat

from .execution import Execution

logger = logging.getLogger('aiorq.worker')


class InFlight:
    """Executions by id with their tasks, and the threads that outlived their execution.

    Changed only on the loop; :meth:`snapshot` and :meth:`__len__` may be called from any thread
    (the heartbeat, a metrics scrape). A plain job's thread that outlives its execution (its
    time limit, a stop) still holds a slot until it returns: :meth:`count` includes it.
    """

    def __init__(self, on_idle: Callable[[], None] | None = None) -> None:
        self._executions: dict[str, Execution] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._lock = threading.Lock()
        self._freed = asyncio.Event()  # set whenever a slot may have freed up
        self.threads = 0  # threads still running after their execution ended
        self.last_ended = 0.0  # time.monotonic() of the last execution's end
        self.on_idle = on_idle  # called when the last execution ends
        # Stop commands that name no known execution while a claim is in flight: the claim may
        # have started it in Redis (where the sender saw it) before its reply reached us.
        self.claims = 0
        self.early_stops: set[str] = set()  # execution ids and job ids

    def __len__(self) -> int:
        """Executions in flight (threads left over not counted)."""
        return len(self._executions)

    def count(self) -> int:
        """Slots taken: executions, and threads that outlived theirs."""
        return len(self._executions) + self.threads

    def executions(self) -> list[Execution]:
        return list(self._executions.values())

    def tasks(self) -> list[asyncio.Task[None]]:
        return list(self._tasks.values())

    def snapshot(self) -> list[Beat]:
        """What a heartbeat needs of each execution, safe to call from another thread."""
        with self._lock:
            executions = list(self._executions.values())
        return [ex.beat() for ex in executions]

    def beaten(self, beats: list[Beat], stamp: datetime) -> None:
        """From the heartbeat thread: Redis took a beat at ``stamp`` for these executions."""
        with self._lock:
            for beat in beats:
                ex = self._executions.get(beat.execution_id)
                if ex is not None:
                    ex.last_beat = stamp

    # -- changes (on the loop) --------------------------------------------------------------

    def add(self, ex: Execution, task: asyncio.Task[None]) -> None:
        with self._lock:
            self._executions[ex.id] = ex
            self._tasks[ex.id] = task
        if ex.id in self.early_stops or ex.job_id in self.early_stops:
            # Stopped while its claim was in flight: once the execution has begun (its first
            # step runs before this callback), as if the command had come a moment later.
            logger.info('Job %s: stop requested while it was being started', ex.job_id)
            asyncio.get_running_loop().call_soon(self.stop_execution, ex.id)

    def done(self, ex: Execution) -> None:
        self.last_ended = time.monotonic()
        with self._lock:
            self._executions.pop(ex.id, None)
            self._tasks.pop(ex.id, None)
        self._freed.set()
        if not self._executions and self.on_idle is not None:
            self.on_idle()

    def track_thread(self, future: asyncio.Future[Any]) -> None:
        """A thread still running after its execution ended: it holds a slot until it returns."""
        self.threads += 1

        def returned(_: Future[Any] | asyncio.Future[Any]) -> None:
            self.threads -= 1
            self._freed.set()

        future.add_done_callback(returned)

    # -- waiting -----------------------------------------------------------------------------

    def wake(self) -> None:
        """Wake whoever waits for a slot (a stop request)."""
        self._freed.set()

    async def changed(self) -> None:
        """Wait until an execution ends or a thread returns (or :meth:`wake`)."""
        self._freed.clear()
        await self._freed.wait()

    async def wait_for_slot(self, limit: int, stopping: Callable[[], bool]) -> None:
        while self.count() >= limit and not stopping():
            await self.changed()

    # -- stopping ------------------------------------------------------------------------------

    @contextmanager
    def claiming(self) -> Iterator[None]:
        """Around a claim in flight: stop commands for unknown ids are kept meanwhile."""
        self.claims += 1
        try:
            yield
        finally:
            self.claims -= 1

    def claimed(self) -> None:
        """A claim's executions were all added: forget kept stops once no claim is in flight."""
        if not self.claims:
            self.early_stops.clear()

    def stop_job(self, job_id: str) -> bool:
        found = False
        for ex in self.executions():
            if ex.job_id == job_id:
                found |= self.stop_execution(ex.id)
        if not found and self.claims:
            self.early_stops.add(job_id)
        return found

    def stop_execution(self, execution_id: str) -> bool:
        ex = self._executions.get(execution_id)
        task = self._tasks.get(execution_id)
        if ex is None or task is None:
            if self.claims:
                self.early_stops.add(execution_id)
            return False
        ex.stopped = True
        task.cancel()
        return True

    def cancel_all(self) -> int:
        """Cold shutdown: cancel every execution's task; returns how many."""
        tasks = self.tasks()
        for task in tasks:
            task.cancel()
        return len(tasks)

    async def drain(self) -> None:
        """Wait until every execution has ended."""
        while self._tasks:
            await asyncio.wait(self.tasks())
