"""Heartbeats from a thread with its own blocking connection, so a job that blocks the event
loop for a while cannot make its executions look abandoned (rq-protocol §4.8, trap 24)."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

import redis

from aiorq.protocol import execution as px
from aiorq.protocol import keys

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
        interval = worker.job_monitoring_interval
        ttl = interval + 60 if executions else worker.worker_ttl + 60
        state = worker.desired_state()
        for start in range(0, max(len(executions), 1), BATCH):
            chunk = executions[start : start + BATCH]
            with self.connection.pipeline(transaction=True) as pipe:
                px.buffer_worker_heartbeat(pipe, worker.name, ttl)
                pipe.hset(keys.worker(worker.name), 'state', state)
                px.heartbeat_commands(pipe, worker.name, chunk, interval)
                results = pipe.execute()
            self._repair(results, chunk, ttl)

    def _repair(self, results: list[object], chunk: list[px.Execution], ttl: int) -> None:
        """An ``HSET`` that created a hash means it had expired or been deleted meanwhile."""
        fixes: list[tuple[str, px.Execution | None]] = []
        if results and results[0] == 1:
            fixes.append(('worker', None))
        # Four worker-level commands come first, then six per execution, the job's HSET last.
        for i, ex in enumerate(chunk):
            idx = 4 + i * 6 + 5
            if idx < len(results) and results[idx] == 1:
                fixes.append(('job', ex))
        if not fixes:
            return
        with self.connection.pipeline(transaction=True) as pipe:
            for kind, fixed in fixes:
                if kind == 'job' and fixed is not None:
                    pipe.delete(keys.job(fixed.job.id))
                else:
                    fields: dict[Any, Any] = self.worker.base_fields()
                    pipe.hset(keys.worker(self.worker.name), mapping=fields)
                    pipe.expire(keys.worker(self.worker.name), ttl)
            pipe.execute()
