"""The dashboard's actions (``aiorq.web``), each with rq's own semantics: requeue, cancel, delete,
stop, empty, suspend and resume one by one, and requeue or delete a whole registry in batches.

Jobs are restored with :class:`NeverLoads`: nothing a job holds is deserialized, and what rq would
unpickle is kept as the raw bytes that rq's own save writes back unchanged. The differential tests
(tests/web/test_web_actions_diff.py) hold each action to rq's Redis state.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from redis.asyncio import Redis
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job as RQJob
from rq.job import JobStatus
from rq.queue import Queue as RQQueue
from rq.utils import as_text

from . import jobs, keys, queues, workers
from .batch import APPLIED, Batch, SectionError, run_batches
from .codec import restore_job
from .enqueue import buffer_enqueue

BATCH = 500  # jobs per batch of a bulk action


class NeverLoads:
    """A serializer that refuses to load: rq's restore then keeps an unreadable ``meta`` as its
    raw bytes, which rq's save writes back unchanged; ``dumps`` is the real serializer's."""

    def __init__(self, serializer: Any = None) -> None:
        from rq.serializers import resolve_serializer

        self.serializer = resolve_serializer(serializer)

    def dumps(self, obj: Any) -> bytes:
        return bytes(self.serializer.dumps(obj))

    def loads(self, data: bytes) -> Any:
        raise ValueError('the dashboard does not deserialize job data')


def _restored(job_id: str, raw: dict[Any, Any]) -> RQJob:
    """A job restored without running any serializer. rq's legacy ``result`` field (which rq
    would unpickle) is dropped from the object, so a save leaves the stored field as it is."""
    job = restore_job(job_id, raw, NeverLoads())
    job._result = None
    return job


async def fetch(conn: Redis, job_id: str) -> RQJob:
    """``Job.fetch`` for an action (``NoSuchJobError`` when the hash is gone)."""
    return _restored(job_id, await conn.hgetall(keys.job(job_id)))


def requeue_registry(job: RQJob) -> str:
    """The registry a requeue takes the job from: failed (``failed``/``stopped``) or canceled."""
    status = job.get_status(refresh=False)
    if status in (JobStatus.FAILED, JobStatus.STOPPED):
        return 'failed'
    if status == JobStatus.CANCELED:
        return 'canceled'
    state = status.value if status else 'without a status'
    raise InvalidJobOperation(f'Job {job.id} is {state}: only failed, stopped and canceled jobs can be requeued')


async def requeue(conn: Redis, job_id: str) -> RQJob:
    """``FailedJobRegistry.requeue`` (``CanceledJobRegistry.requeue`` for a canceled job)."""
    job = await fetch(conn, job_id)
    return await jobs.requeue(conn, job, keys.registry(requeue_registry(job), job.origin))


async def cancel(conn: Redis, job_id: str) -> None:
    """``rq.cancel_job``."""
    await jobs.cancel(conn, await fetch(conn, job_id))


async def delete(conn: Redis, job_id: str) -> None:
    """``Job.fetch(id).delete()``."""
    await jobs.delete(conn, await fetch(conn, job_id))


async def stop(conn: Redis, job_id: str) -> str:
    """``rq.command.send_stop_job_command``: the stop-job command to the worker running the
    job, whose name is returned."""
    status, worker_name = await conn.hmget(keys.job(job_id), ['status', 'worker_name'])
    if status is None:
        raise NoSuchJobError(f'No such job: {job_id}')
    if not worker_name:
        raise InvalidJobOperation('Job is not currently executing')
    name = as_text(worker_name)
    await workers.send_command(conn, name, 'stop-job', job_id=job_id)
    return name


async def empty_queue(conn: Redis, queue_name: str) -> int:
    """``Queue.empty``: how many jobs were removed."""
    return await queues.empty(conn, queue_name)


async def suspend(conn: Redis) -> None:
    await workers.suspend(conn)


async def resume(conn: Redis) -> None:
    await workers.resume(conn)


# -- bulk actions --------------------------------------------------------------------------------


@dataclass
class BulkResult:
    """What a bulk action did: jobs done, ids skipped (hash gone, or another client moved the
    job first), and errors (a job rq's own call would refuse)."""

    done: int = 0
    skipped: int = 0
    errors: list[str] = field(default_factory=list)


async def _restore_many(conn: Redis, ids: Sequence[str]) -> list[RQJob | None]:
    async with conn.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.hgetall(keys.job(job_id))
        raws = await pipe.execute()
    return [_restored(i, raw) if raw else None for i, raw in zip(ids, raws)]


def buffer_requeue(sink: Any, job: RQJob, registry_key: str) -> None:
    """``BaseRegistry.requeue`` of a job without a rate limit, guarded: the writes apply only
    while the job is still in the registry. The member goes last, so a write that Redis refuses
    midway (out of memory) leaves the job listed rather than lost."""
    sink.guard_member(registry_key, job.id)
    job.started_at = None
    job.ended_at = None
    job._exc_info = ''
    buffer_enqueue(sink, job, job.origin, RQQueue.DEFAULT_TIMEOUT, at_front=False)
    sink.zrem(registry_key, job.id)


class _Walk:
    """The members a registry holds when the walk starts, oldest first, in batches; a member the
    caller leaves in the registry (``left()``) is stepped over by the next batch."""

    def __init__(self, conn: Redis, key: str, batch: int | None) -> None:
        self.conn, self.key, self.batch = conn, key, batch or BATCH
        self.skip = 0

    def left(self) -> None:
        self.skip += 1

    async def batches(self) -> AsyncIterator[list[str]]:
        budget = int(await self.conn.zcard(self.key))
        while budget > 0:
            count = min(self.batch, budget)
            members = cast(list[bytes], await self.conn.zrange(self.key, self.skip, self.skip + count - 1))
            if not members:
                return
            budget -= len(members)
            yield [as_text(m) for m in members]


async def bulk_requeue(conn: Redis, queue_name: str, kind: str = 'failed', batch: int | None = None) -> BulkResult:
    """Requeue every job that is in the registry when this starts (oldest first, as a loop over
    rq's ``registry.requeue`` would), one guarded script call per batch."""
    key = keys.registry(kind, queue_name)
    result, walk = BulkResult(), _Walk(conn, key, batch)
    async for ids in walk.batches():
        sections: list[Batch] = []
        for job in await _restore_many(conn, ids):
            if job is None:  # as rq's requeue would raise NoSuchJobError: left where it is
                result.skipped += 1
                walk.left()
            elif job.has_rate_limit:  # through the limiter, as rq's requeue
                try:
                    await jobs.requeue(conn, job, key)
                    result.done += 1
                except InvalidJobOperation:
                    result.skipped += 1
            else:
                section = Batch()
                buffer_requeue(section, job, key)
                sections.append(section)
        for outcome in await run_batches(conn, sections) if sections else []:
            if outcome == APPLIED:
                result.done += 1
            elif isinstance(outcome, SectionError):
                raise RuntimeError(f'Redis refused a requeue: {outcome}') from outcome
            else:
                result.skipped += 1  # no longer in the registry: someone else moved it
    return result


def _plain_delete(job: RQJob, executions: int) -> bool:
    """A job whose ``delete()`` needs nothing read beyond its hash: no execution, no rate
    limit, no group (whose existence rq checks), in a registry of bare ids."""
    status = job.get_status(refresh=False)
    return not executions and not job.has_rate_limit and not job.group_id and status != JobStatus.STARTED


def buffer_delete_plain(pipe: Any, job: RQJob) -> None:
    """``Job.delete()`` of a job for which :func:`_plain_delete` holds: what it writes."""
    pipe.lrem(keys.queue(job.origin), 1, job.id)
    status = job.get_status(refresh=False)
    if status is not None and status in jobs._REGISTRY_BY_STATUS:
        pipe.zrem(keys.registry(jobs._REGISTRY_BY_STATUS[status], job.origin), job.id)
    pipe.delete(keys.executions(job.id))
    pipe.delete(keys.job(job.id), keys.dependents(job.id), keys.dependencies(job.id), keys.results(job.id))


async def bulk_delete(conn: Redis, queue_name: str, kind: str = 'failed', batch: int | None = None) -> BulkResult:
    """Delete every job that is in the registry when this starts, as ``job.delete()`` on each
    would: one read pipeline and one MULTI per batch (jobs with executions, a rate limit or a
    group go through rq's full delete, one by one)."""
    key = keys.registry(kind, queue_name)
    result, walk = BulkResult(), _Walk(conn, key, batch)
    async for ids in walk.batches():
        async with conn.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hgetall(keys.job(job_id))
                pipe.zcard(keys.executions(job_id))
            raws = await pipe.execute()
        found = [(_restored(i, raw), n) if raw else None for i, raw, n in zip(ids, raws[::2], raws[1::2])]
        others: list[RQJob] = []
        async with conn.pipeline(transaction=True) as pipe:
            for item in found:
                if item is None:
                    result.skipped += 1
                    walk.left()
                elif _plain_delete(*item):
                    buffer_delete_plain(pipe, item[0])
                    result.done += 1
                else:
                    others.append(item[0])
            await pipe.execute()
        for job in others:
            try:
                await jobs.delete(conn, job)
                result.done += 1
            except Exception as e:  # what rq's delete raises for this job (a missing group …)
                result.errors.append(f'{job.id}: {type(e).__name__}: {e}')
                walk.left()
    return result
