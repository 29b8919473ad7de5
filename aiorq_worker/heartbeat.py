"""Heartbeats from a thread with its own blocking connection, so a job that blocks the event
loop for a while cannot make its executions look abandoned (rq-protocol §4.8, trap 24)."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

import redis

from aiorq.protocol import execution as px

if TYPE_CHECKING:
    from .worker import Worker

logger = logging.getLogger('aiorq.worker')
BATCH = 100


class Heartbeat(threading.Thread):
    def __init__(self, worker: Worker, connection: redis.Redis) -> None:
        super().__init__(name=f'aiorq-heartbeat-{worker.name}', daemon=True)
        self.worker = worker
        self.connection = connection
        self.stopping = threading.Event()
        self.wake = threading.Event()

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()

    def run(self) -> None:
        interval = self.worker.job_monitoring_interval
        while not self.stopping.is_set():
            try:
                self.beat()
            except Exception:
                logger.warning('Worker %s: heartbeat failed; retrying', self.worker.name, exc_info=True)
            self.wake.wait(interval if self.worker.executions else min(interval, 30))
            self.wake.clear()

    def beat(self) -> None:
        worker = self.worker
        executions = list(worker.executions.values())
        for start in range(0, max(len(executions), 1), BATCH):
            px.heartbeat_sync(
                self.connection,
                worker.name,
                executions[start : start + BATCH],
                interval=worker.job_monitoring_interval,
                idle_ttl=worker.worker_ttl + 60,
                state=worker.idle_state(),
                base_fields=worker.base_fields,
            )
