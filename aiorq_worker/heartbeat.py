"""Heartbeats from a thread with its own blocking connection, so a job that blocks the event
loop for a while cannot make its executions look abandoned (rq-protocol §4.8, trap 24)."""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

import redis

from aiorq.protocol import workers

if TYPE_CHECKING:
    from .watchdog import LoopWatchdog
    from .worker import Worker

logger = logging.getLogger('aiorq.worker')
BATCH = 100


class Heartbeat(threading.Thread):
    def __init__(self, worker: Worker, connection: redis.Redis, watchdog: LoopWatchdog | None = None) -> None:
        super().__init__(name=f'aiorq-heartbeat-{worker.name}', daemon=True)
        self.worker = worker
        self.connection = connection
        # A loop held past every time limit: no beats, so other workers recover the executions.
        self.watchdog = watchdog
        self.stopping = threading.Event()
        self.wake = threading.Event()
        self.last_beat: float | None = None  # time.monotonic() of the last beat Redis took

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()

    def run(self) -> None:
        interval = self.worker.job_monitoring_interval
        retry = 1.0
        while not self.stopping.is_set():
            wait: float = interval if self.worker.executions else min(interval, 30)
            if self.watchdog is not None and self.watchdog.stalled:
                self.wake.wait(1)  # beat again as soon as the loop turns
                self.wake.clear()
                continue
            try:
                self.beat()
                self.last_beat = time.monotonic()
                retry = 1.0
            except Exception as e:
                # Soon again (with backoff), not a whole interval later: once Redis is back the
                # executions' deadlines and the worker record must be refreshed at once.
                logger.warning('Worker %s: heartbeat failed (%s); retrying in %.0fs', self.worker.name, e, retry)
                wait, retry = min(wait, retry), min(retry * 2, 60)
            self.wake.wait(wait)
            self.wake.clear()

    def beat(self) -> None:
        worker = self.worker
        executions = list(worker.executions.values())
        for start in range(0, max(len(executions), 1), BATCH):
            rejoined = workers.heartbeat_sync(
                self.connection,
                worker.name,
                executions[start : start + BATCH],
                interval=worker.job_monitoring_interval,
                idle_ttl=worker.worker_ttl + 60,
                state=worker.idle_state(),
                base_fields=worker.base_fields,
                queue_names=worker.queue_names,
            )
            if rejoined:
                logger.warning(
                    'Worker %s: its record was gone from Redis (data lost, or expired during an outage); '
                    'registered again',
                    worker.name,
                )
