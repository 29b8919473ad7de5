"""The job events (``aiorq_worker.events``): every listener hears each event in order, one that
raises is logged and disturbs neither the others nor the job; the throughput listener counts
only jobs that ended for good."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import tasks
from redis.asyncio import Redis

from aiorq import Queue
from aiorq_worker import Worker
from aiorq_worker.events import Ending, Listener, ThroughputListener
from aiorq_worker.execution import Execution
from aiorq_worker.throughput import ThroughputRecorder


class Recording(Listener):
    def __init__(self, seen: list[Any], label: str) -> None:
        self.seen, self.label = seen, label

    def job_started(self, ex: Execution) -> None:
        self.seen.append((self.label, 'started', ex.job.id))

    def job_ended(self, ex: Execution, ending: Ending) -> None:
        self.seen.append((self.label, ending.kind, ex.job.id))

    def job_left(self, ex: Execution) -> None:
        self.seen.append((self.label, 'left', ex.job.id))


class Broken(Listener):
    def job_started(self, ex: Execution) -> None:
        raise RuntimeError('a broken listener')


async def test_listeners_hear_each_execution_in_order(conn: Redis, caplog: pytest.LogCaptureFixture) -> None:
    q = Queue('q', connection=conn)
    ok, bad = await q.enqueue(tasks.add, 1, 2), await q.enqueue(tasks.fail)
    worker = Worker('q', connection=conn, name='heard', concurrency=1)
    seen: list[Any] = []
    worker.events.listeners[:0] = [Broken(), Recording(seen, 'first')]
    worker.events.add(Recording(seen, 'last'))
    caplog.set_level(logging.ERROR, 'aiorq.worker')
    await worker.work(burst=True)
    for job_id, kind in ((ok.id, 'finished'), (bad.id, 'failed')):
        mine = [s for s in seen if s[2] == job_id]
        assert mine == [(who, what, job_id) for what in ('started', kind, 'left') for who in ('first', 'last')]
    assert 'a broken listener' in caplog.text
    assert (worker.successful_job_count, worker.failed_job_count) == (1, 1)
    assert await ok.result == 3


def test_throughput_counts_jobs_that_ended_for_good(conn: Redis) -> None:
    recorder = ThroughputRecorder(conn, clock=lambda: 600.0)
    listener = ThroughputListener(recorder)
    ex = Execution(record=None, queue='q', id='e', created_at=0.0)  # type: ignore[arg-type]
    for ending in Ending:
        listener.job_ended(ex, ending)
    # OK counts as finished; a failure, a stop and a cold shutdown as failed; retries not yet.
    assert dict(recorder.pending) == {(10, 'q', 'finished'): 1, (10, 'q', 'failed'): 3}
