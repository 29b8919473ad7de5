"""Cron transitions (rq-protocol §8): the cron scheduler record and the enqueue of due cron jobs.

Stock ``rq cron`` has no lock: two of them enqueue every tick twice. aiorq's enqueue is guarded
with rq's own data: every enqueue of a cron job writes ``ZADD rq:cron_jobs <name> <enqueued_at>``
(the name's last enqueue) in the same MULTI as the job. aiorq reads that score under ``WATCH``
and enqueues only when it shows that nobody has enqueued this tick yet, so it never enqueues a
tick that another writer (an aiorq runner or a stock ``rq cron``) has already recorded.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import WatchError
from rq.cron import CronJob
from rq.defaults import DEFAULT_CRON_JOB_HISTORY_LIMIT, DEFAULT_CRON_JOB_HISTORY_TTL, DEFAULT_CRON_SCHEDULER_TTL
from rq.job import Job as RQJob
from rq.job import JobStatus
from rq.queue import Queue as RQQueue
from rq.utils import utcformat

from . import keys
from .codec import codec_queue, mapping
from .enqueue import Sink, buffer_enqueue

__all__ = [
    'DEFAULT_TIMEOUT',
    'build_job',
    'enqueue_due',
    'heartbeat',
    'last_enqueues',
    'register_birth',
    'register_death',
    'save',
    'scheduler_record',
]

# ``CronJob.enqueue`` builds a fresh ``Queue(queue_name)``, so jobs without ``job_timeout`` get
# the queue class default.
DEFAULT_TIMEOUT: int = RQQueue.DEFAULT_TIMEOUT


def build_job(cron_job: CronJob) -> RQJob:
    """The job ``CronJob.enqueue`` creates (``queue.enqueue(func, args=, kwargs=, **job_options)``),
    built without I/O and with rq's default (pickle) serializer, whatever the CLI's ``-S`` says."""
    if cron_job.func is None:
        raise ValueError('CronJob has no function to enqueue. It may have been created for monitoring purposes.')
    options = cron_job.job_options
    job = codec_queue(cron_job.queue_name).create_job(
        cron_job.func,
        args=cron_job.args,
        kwargs=cron_job.kwargs,
        timeout=options.get('job_timeout'),
        result_ttl=options.get('result_ttl'),
        ttl=options.get('ttl'),
        failure_ttl=options.get('failure_ttl'),
        meta=options.get('meta'),
        webhooks=options.get('webhooks'),
        status=JobStatus.QUEUED,
    )
    mapping(job)  # serialize now: a bad argument fails here, before anything is sent
    return job


def _buffer_cron_enqueue(pipe: Sink, name: str, job: RQJob, queue_name: str) -> float:
    """§8's MULTI for one due job: §4.1's enqueue, then the cron history and registry."""
    pipe.sadd(keys.QUEUES, keys.queue(queue_name))
    buffer_enqueue(pipe, job, queue_name, DEFAULT_TIMEOUT, at_front=False)
    assert job.enqueued_at is not None
    stamp = job.enqueued_at.timestamp()
    history = keys.cron_job_history(name)
    pipe.zadd(history, {job.id: stamp})
    pipe.zremrangebyrank(history, 0, -(DEFAULT_CRON_JOB_HISTORY_LIMIT + 1))
    pipe.expire(history, DEFAULT_CRON_JOB_HISTORY_TTL)
    pipe.zadd(keys.CRON_JOBS, {name: stamp})
    return stamp


async def enqueue_due(
    conn: Redis, name: str, items: Sequence[tuple[RQJob, str, float]]
) -> tuple[list[RQJob], float | None]:
    """Enqueue the due jobs of one cron job name, each only if nobody recorded its tick yet.

    ``items`` are ``(job, queue_name, before)``: the job is enqueued only if the name's last
    enqueue (``ZSCORE rq:cron_jobs <name>``) is absent or earlier than ``before``. The score is
    read once for all items, so several cron jobs sharing a name (rq allows it) do not shut
    each other out. ``WATCH`` on the name's history key makes read-and-enqueue atomic: every
    writer of the score (``CronJob.enqueue`` too) writes that key in the same MULTI.
    Returns the jobs enqueued and the name's score afterwards.
    """
    history = keys.cron_job_history(name)
    async with conn.pipeline(transaction=True) as pipe:
        while True:
            try:
                await pipe.watch(history)
                last: float | None = await pipe.zscore(keys.CRON_JOBS, name)
                chosen = [(job, queue_name) for job, queue_name, before in items if last is None or last < before]
                if not chosen:
                    return [], last
                pipe.multi()
                stamp = 0.0
                for job, queue_name in chosen:
                    stamp = _buffer_cron_enqueue(pipe, name, job, queue_name)
                await pipe.execute()
                return [job for job, _ in chosen], stamp
            except WatchError:
                continue


async def last_enqueues(conn: Redis, names: Sequence[str]) -> dict[str, float | None]:
    """Each name's last enqueue (``rq:cron_jobs`` score) as recorded by any cron scheduler."""
    async with conn.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.zscore(keys.CRON_JOBS, name)
        scores = await pipe.execute()
    return dict(zip(names, scores))


def scheduler_record(
    name: str, hostname: str, pid: int, created_at: datetime, config_file: str, cron_jobs: Sequence[CronJob]
) -> dict[str, str]:
    """``CronScheduler.to_dict``: the fields of ``rq:cron_scheduler:<name>``."""
    return {
        'hostname': hostname,
        'pid': str(pid),
        'name': name,
        'created_at': utcformat(created_at),
        'config_file': config_file or '',
        'cron_jobs': json.dumps([job.to_dict() for job in cron_jobs]),
    }


def _buffer_save(pipe: Any, name: str, record: dict[str, str]) -> None:
    pipe.hset(keys.cron_scheduler(name), mapping=record)
    pipe.expire(keys.cron_scheduler(name), DEFAULT_CRON_SCHEDULER_TTL)


async def register_birth(conn: Redis, name: str, record: dict[str, str]) -> None:
    """``CronScheduler.register_birth``: ``ZADD NX`` in the registry and the record, one MULTI."""
    async with conn.pipeline(transaction=True) as pipe:
        pipe.zadd(keys.CRON_SCHEDULERS, {name: time.time()}, nx=True)
        _buffer_save(pipe, name, record)
        await pipe.execute()


async def save(conn: Redis, name: str, record: dict[str, str]) -> None:
    """``CronScheduler.save``: the record with its 120 s TTL, one MULTI."""
    async with conn.pipeline(transaction=True) as pipe:
        _buffer_save(pipe, name, record)
        await pipe.execute()


async def heartbeat(conn: Redis, name: str) -> tuple[bool, bool]:
    """``CronScheduler.heartbeat``'s MULTI: ``ZADD`` (no NX) and ``EXPIRE`` of the record.

    Returns (re-registered: the name was missing from the registry, record alive: the hash
    still existed; when it did not, the caller re-saves it, as rq does).
    """
    async with conn.pipeline(transaction=True) as pipe:
        pipe.zadd(keys.CRON_SCHEDULERS, {name: time.time()})
        pipe.expire(keys.cron_scheduler(name), DEFAULT_CRON_SCHEDULER_TTL)
        added, alive = await pipe.execute()
    return bool(added), bool(alive)


async def register_death(conn: Redis, name: str) -> bool:
    """``CronScheduler.register_death``: an immediate ``ZREM``; the record is left to expire."""
    return bool(await conn.zrem(keys.CRON_SCHEDULERS, name))
