"""The job functions of the examples (the seed's ``mylib``), written for rq 3.0.

Workers import jobs by name, so this module must be importable by them: put the ``examples``
directory on their import path (``rq worker --path examples my_queue`` or ``PYTHONPATH=examples``).

* ``add`` and ``summator`` are plain functions: stock rq workers run them as they are.
* ``job_summator`` runs *inside* a stock worker, which is synchronous: it reads other jobs' results
  with rq's own blocking API and the worker's connection (``rq.Connection`` is gone since rq 2.0).
* ``async_add`` is a coroutine job: stock rq 3.0 runs it with ``asyncio.run``, and
  ``aiorq.get_current_job()`` works inside it.
* ``divide`` fails on a zero (examples/test_with_aiorq.py); ``slow_add`` takes a while
  (examples/mixed_fleet.py).
* ``sum_of_squares`` fans out into a group of ``square`` jobs and a ``total`` job that depends on
  them all (examples/fan_out.py); ``count_to`` reports its progress in ``job.meta``
  (examples/progress.py).
"""

from __future__ import annotations

import asyncio
import time

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


def divide(a: float, b: float) -> float:
    return a / b


def slow_add(a: int, b: int, pause: float = 0.2) -> int:
    time.sleep(pause)  # stands for real work
    return a + b


def square(n: int) -> int:
    return n * n


async def sum_of_squares(numbers: list[int]) -> str:
    """Fan out: one ``square`` job per number, enqueued as one ``aiorq.Group``, and a ``total``
    job released once they all finished. Returns the id of the ``total`` job."""
    job = aiorq.get_current_job()
    if job is None:
        raise RuntimeError('sum_of_squares runs inside a worker')
    queue = job.queue()
    group = aiorq.Group(connection=job.connection)
    squares = await group.enqueue_many(queue, [aiorq.Queue.prepare_data(square, (n,)) for n in numbers])
    total_job = await queue.enqueue(total, group.name, depends_on=squares)
    return total_job.id


async def total(group_name: str) -> int:
    """The sum of the return values of a group's jobs."""
    job = aiorq.get_current_job()
    if job is None:
        raise RuntimeError('total runs inside a worker')
    group = await aiorq.Group.fetch(group_name, connection=job.connection)
    return sum([await member.return_value() for member in await group.get_jobs()])


async def count_to(n: int, pause: float) -> int:
    """Counts to ``n``, one step per ``pause`` seconds, with its progress in ``job.meta``."""
    job = aiorq.get_current_job()
    if job is None:
        raise RuntimeError('count_to runs inside a worker')
    for step in range(1, n + 1):
        await asyncio.sleep(pause)  # stands for one step of real work
        job.meta['progress'] = step * 100 // n
        await job.save_meta()  # writes only the meta field: readers see it at once
    return n
