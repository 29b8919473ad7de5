"""Heartbeats from a thread with its own blocking connection, so a job that blocks the event
loop for a while cannot make its executions look abandoned (rq-protocol §4.8, trap 24)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import redis
from rq.utils import now

from aiorq.protocol import workers
from aiorq.protocol.workers import Beat

from .backoff import Backoff
from .settings import Settings
from .watchdog import LoopWatchdog

logger = logging.getLogger('aiorq.worker')
BATCH = 100
IDLE_BEAT = 30  # seconds between beats at most while nothing runs


class Heartbeat(threading.Thread):
    """Beats for the worker record and every execution in ``snapshot()`` (called on this
    thread), showing ``idle_state()`` when nothing runs; ``base_fields()`` rebuilds a record
    that Redis lost. No beats while ``watchdog`` declares the loop stalled."""

    def __init__(
        self,
        settings: Settings,
        connection: redis.Redis,
        snapshot: Callable[[], list[Beat]],
        idle_state: Callable[[], str],
        base_fields: Callable[[], dict[str, Any]],
        watchdog: LoopWatchdog | None = None,
        beaten: Callable[[list[Beat], datetime], None] | None = None,
    ) -> None:
        super().__init__(name=f'aiorq-heartbeat-{settings.name}', daemon=True)
        self.settings = settings
        self.connection = connection
        self.snapshot = snapshot
        self.idle_state = idle_state
        self.base_fields = base_fields
        # A loop held past every time limit: no beats, so other workers recover the executions.
        self.watchdog = watchdog
        self.beaten = beaten  # told which executions a beat Redis took covered, and its time
        self.stopping = threading.Event()
        self.wake = threading.Event()
        self.last_beat: float | None = None  # time.monotonic() of the last beat Redis took

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()

    def run(self) -> None:
        interval = self.settings.job_monitoring_interval
        retry = Backoff()
        while not self.stopping.is_set():
            if self.watchdog is not None and self.watchdog.stalled:
                self.wake.wait(1)  # beat again as soon as the loop turns
                self.wake.clear()
                continue
            executions = self.snapshot()
            wait: float = interval if executions else min(interval, IDLE_BEAT)
            try:
                self.beat(executions)
                self.last_beat = time.monotonic()
                retry.reset()
            except Exception as e:
                # Soon again (with backoff), not a whole interval later: once Redis is back the
                # executions' deadlines and the worker record must be refreshed at once.
                wait = min(wait, retry.next())
                logger.warning('Worker %s: heartbeat failed (%s); retrying in %.0fs', self.settings.name, e, wait)
            self.wake.wait(wait)
            self.wake.clear()

    def beat(self, executions: list[Beat]) -> None:
        name = self.settings.name
        stamp = now()  # the job hashes' last_heartbeat, as written
        for start in range(0, max(len(executions), 1), BATCH):
            rejoined = workers.heartbeat_sync(
                self.connection,
                name,
                executions[start : start + BATCH],
                interval=self.settings.job_monitoring_interval,
                idle_ttl=self.settings.idle_ttl,
                state=self.idle_state(),
                base_fields=self.base_fields,
                queue_names=self.settings.queue_names,
                stamp=stamp,
            )
            if self.beaten is not None:
                self.beaten(executions[start : start + BATCH], stamp)
            if rejoined:
                logger.warning(
                    'Worker %s: its record was gone from Redis (data lost, or expired during an outage); '
                    'registered again',
                    name,
                )
