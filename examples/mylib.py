"""The job functions of the examples (the seed's ``mylib``), written for rq 3.0.

Workers import jobs by name, so this module must be importable by them: put the ``examples``
directory on their import path (``rq worker --path examples my_queue`` or ``PYTHONPATH=examples``).

* ``add`` and ``summator`` are plain functions: stock rq workers run them as they are.
* ``job_summator`` runs *inside* a stock worker, which is synchronous: it reads other jobs' results
  with rq's own blocking API and the worker's connection (``rq.Connection`` is gone since rq 2.0).
* ``async_add`` is a coroutine job: stock rq 3.0 runs it with ``asyncio.run``, and
  ``aiorq.get_current_job()`` works inside it.
"""

from __future__ import annotations

import asyncio

import rq
from rq.job import Job as RQJob

import aiorq


def add(a: int, b: int) -> int:
    return a + b


@aiorq.job('my_queue')
def summator(*args: int) -> int:
    """Celery-style: ``await summator.delay(1, 2)`` enqueues ``summator(1, 2)`` on 'my_queue'."""
    return add(*args)


def job_summator(id1: str, id2: str) -> int:
    """Add the results of two finished jobs (enqueue it with ``depends_on`` the later one)."""
    current = rq.get_current_job()
    if current is None:
        raise RuntimeError('job_summator runs inside an rq worker')
    connection = current.connection
    job1 = RQJob.fetch(id1, connection=connection)
    job2 = RQJob.fetch(id2, connection=connection)
    return add(job1.return_value(), job2.return_value())


async def async_add(a: int, b: int) -> int:
    """A coroutine job: it records its own id in its meta, read back by the demo."""
    job = aiorq.get_current_job()
    if job is None:
        raise RuntimeError('async_add runs inside a worker')
    job.meta['seen_id'] = job.id
    await job.save_meta()
    await asyncio.sleep(0)
    return a + b
