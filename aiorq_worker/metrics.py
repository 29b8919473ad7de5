"""Prometheus metrics of one worker, served on ``/metrics`` (``aiorq worker --metrics-port``).

Needs ``prometheus_client`` (``pip install aiorq[metrics]``). Counters are labelled ``queue`` and
``function``; gauges that describe the present (executions in flight, queue depths, heartbeat
age) are read when Prometheus scrapes, so they are never stale.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from redis.asyncio import Redis
from rq.job import Job as RQJob

import aiorq
from aiorq.tracing import func_name

from .events import Ending, Listener
from .execution import Execution

try:
    from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
    from prometheus_client.core import GaugeMetricFamily
except ImportError:
    AVAILABLE = False
else:
    AVAILABLE = True

logger = logging.getLogger('aiorq.worker')

MISSING = 'metrics need prometheus_client: pip install aiorq[metrics]'
SCRAPE_TIMEOUT = 2.0  # seconds a scrape waits for the queue depths from the worker's loop
LABELS = ('queue', 'function')


class MetricsError(RuntimeError):
    """Metrics were asked for but cannot be served (package missing, port taken)."""


class WorkerMetrics(Listener):
    """The worker's metrics on a private registry (several workers may share a process): a
    listener of its job events, plus gauges read at scrape time through ``in_flight`` (executions
    running) and ``last_beat`` (``time.monotonic()`` of the last heartbeat Redis took)."""

    def __init__(
        self,
        name: str,
        connection: Redis,
        queue_names: Sequence[str],
        in_flight: Callable[[], int],
        last_beat: Callable[[], float | None],
    ) -> None:
        if not AVAILABLE:
            raise MetricsError(MISSING)
        self.name = name
        self.connection = connection
        self.queue_names = list(queue_names)
        self.in_flight = in_flight
        self.last_beat = last_beat
        self.registry = CollectorRegistry()
        r = self.registry
        self.started = Counter('aiorq_jobs_started', 'Executions started', LABELS, registry=r)
        self.finished = Counter('aiorq_jobs_finished', 'Executions that succeeded', LABELS, registry=r)
        self.failed = Counter(
            'aiorq_jobs_failed', 'Executions that failed for good (stopped ones included)', LABELS, registry=r
        )
        self.retried = Counter('aiorq_jobs_retried', 'Failed executions left to a retry', LABELS, registry=r)
        self.abandoned = Counter(
            'aiorq_jobs_abandoned', 'Abandoned executions recovered by maintenance', LABELS, registry=r
        )
        self.duration = Histogram(
            'aiorq_job_duration_seconds', 'Execution time, outcome write included', LABELS, registry=r
        )
        self.loop_blocks = Histogram(
            'aiorq_loop_blocked_seconds',
            'Times a job (or other code) held the event loop for a second or more, and for how long',
            LABELS,
            buckets=(1, 2, 5, 10, 30, 60, 180, 600, float('inf')),
            registry=r,
        )
        self.reconnects = Counter(
            'aiorq_redis_reconnects', 'Times job admission lost Redis and reached it again', registry=r
        )
        r.register(_Present(self))
        self.counters = {
            'finished': self.finished,
            'failed': self.failed,
            'retried': self.retried,
            # Recorded as failures in rq's data (failed registry), so counted as such.
            'stopped': self.failed,
            'cancelled': self.failed,
        }
        self._began: dict[str, float] = {}
        self._server: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.port: int | None = None

    # -- the job events -----------------------------------------------------------------------

    def job_started(self, ex: Execution) -> None:
        self._began[ex.id] = time.monotonic()
        self.started.labels(ex.queue, ex.func_name).inc()

    def job_ended(self, ex: Execution, ending: Ending) -> None:
        labels = (ex.queue, ex.func_name)
        began = self._began.pop(ex.id, None)
        if began is not None:
            self.duration.labels(*labels).observe(time.monotonic() - began)
        counter = self.counters.get(ending.kind)
        if counter is not None:
            counter.labels(*labels).inc()

    def job_abandoned(self, job: RQJob) -> None:
        self.abandoned.labels(job.origin, func_name(job)).inc()

    def reconnected(self) -> None:
        self.reconnects.inc()

    def loop_blocked(self, seconds: float, ex: Execution | None) -> None:
        """A block of the event loop, by the execution that held it (empty labels: none known)."""
        labels = (ex.queue, ex.func_name) if ex is not None else ('', '')
        self.loop_blocks.labels(*labels).observe(seconds)

    # -- serving ----------------------------------------------------------------------------

    def serve(self, port: int, address: str = '127.0.0.1') -> None:
        """Serve ``/metrics`` from a daemon thread (port 0: any free port, see ``self.port``); on
        loopback unless told otherwise, since the page names queues and functions."""
        self._loop = asyncio.get_running_loop()
        try:
            started = start_http_server(port, address, registry=self.registry)
        except OSError as e:
            raise MetricsError(f'cannot serve metrics on {address}:{port}: {e.strerror or e}') from e
        self._server = started[0] if isinstance(started, tuple) else None
        self.port = self._server.server_port if self._server is not None else port
        logger.info('Worker %s: metrics on http://%s:%d/metrics', self.name, address, self.port)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def queue_depths(self) -> dict[str, int]:
        """Each queue's length, read through the worker's own loop and client (scrape thread)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return {}

        async def read() -> dict[str, int]:
            conn = self.connection
            return {name: await aiorq.Queue(name, connection=conn).count for name in self.queue_names}

        try:
            return asyncio.run_coroutine_threadsafe(read(), loop).result(SCRAPE_TIMEOUT)
        except Exception as e:
            logger.debug('queue depths unavailable for this scrape: %r', e)
            return {}


class _Present:
    """Gauges computed at scrape time."""

    def __init__(self, metrics: WorkerMetrics) -> None:
        self.metrics = metrics

    def describe(self) -> list[Any]:
        return []  # nothing read from Redis when the collector is registered

    def collect(self) -> Iterator[Any]:
        metrics = self.metrics
        yield GaugeMetricFamily('aiorq_executions_in_flight', 'Executions running now', value=metrics.in_flight())
        depth = GaugeMetricFamily('aiorq_queue_depth', 'Jobs waiting in each queue', labels=['queue'])
        for name, count in self.metrics.queue_depths().items():
            depth.add_metric([name], count)
        yield depth
        beat = metrics.last_beat()
        if beat is not None:
            yield GaugeMetricFamily(
                'aiorq_heartbeat_age_seconds',
                "Seconds since the worker's last successful heartbeat",
                value=time.monotonic() - beat,
            )
