"""Job registries: the sorted sets rq keeps per queue, with rq 3.0's methods, awaited.

Counting or listing with ``cleanup=True`` (the default) runs the registry's cleanup first, as
rq does; for the started registry that fails or retries abandoned jobs.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, NoReturn

from redis.asyncio import Redis
from rq.exceptions import NoSuchJobError
from rq.executions import Execution
from rq.job import Job as RQJob
from rq.serializers import resolve_serializer

from . import protocol as p
from ._awaitable import AwaitableProperty, refuse
from .connections import current_connection_or_none, resolve_connection, sync_connection
from .handlers import CallbackRunner, ExcInfo, call_exception_handlers, handle_abandoned

if TYPE_CHECKING:
    from .job import Job
    from .queue import Queue

__all__ = [
    'BaseRegistry',
    'StartedJobRegistry',
    'FinishedJobRegistry',
    'FailedJobRegistry',
    'DeferredJobRegistry',
    'ReadyJobRegistry',
    'ScheduledJobRegistry',
    'CanceledJobRegistry',
    'ExecutionRegistry',
    'clean_registries',
]

logger = logging.getLogger('aiorq.registry')


class BaseRegistry:
    """Reads shared by every registry."""

    kind = ''
    key_template = ''

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # rq's class attribute, from rq's own template for this kind.
        cls.key_template = p.keys.REGISTRY_TEMPLATES.get(cls.kind, '')

    def __init__(
        self,
        name: str = 'default',
        connection: Redis | None = None,
        job_class: type[Job] | None = None,
        queue: Queue | None = None,
        serializer: Any = None,
    ) -> None:
        from .job import checked_job_class

        if queue is not None:
            name = queue.name
            connection = connection if connection is not None else queue._connection
            serializer = serializer if serializer is not None else queue.serializer
        self.name = name
        self._connection = connection if connection is not None else current_connection_or_none()
        self.job_class: type[Job] = checked_job_class(job_class)
        self.serializer = resolve_serializer(serializer)

    @property
    def connection(self) -> Redis:
        return resolve_connection(self._connection)

    @property
    def key(self) -> str:
        return p.keys.registry(self.kind, self.name)

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}({self.name!r})'

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.name == other.name

    def __hash__(self) -> int:
        return hash((type(self), self.name))

    def __len__(self) -> NoReturn:
        refuse('len(registry)', 'await registry.count')

    def __contains__(self, item: Any) -> NoReturn:
        refuse('`x in registry`', 'await registry.contains(x)')

    @staticmethod
    def parse_job_id(entry: str) -> str:
        return entry

    def get_queue(self) -> Queue:
        from .queue import Queue

        return Queue(self.name, connection=self._connection, serializer=self.serializer)

    async def cleanup(self, timestamp: int | None = None, exception_handlers: list[Any] | None = None) -> Any:
        """Drop what rq's cleanup drops for this kind of registry (only the started registry has
        abandoned jobs to pass to ``exception_handlers``)."""
        await p.registries.cleanup(
            self.connection, self.kind, self.name, serializer=self.serializer, timestamp=timestamp
        )

    @property
    def count(self) -> AwaitableProperty[int]:
        return AwaitableProperty(self.get_job_count, f'{self.__class__.__name__}.count')

    async def get_job_count(self, cleanup: bool = True) -> int:
        if cleanup:
            await self.cleanup()
        return await p.registries.count(self.connection, self.kind, self.name)

    async def get_job_ids(self, start: int = 0, end: int = -1, desc: bool = False, cleanup: bool = True) -> list[str]:
        if cleanup:
            await self.cleanup()
        return await p.registries.job_ids(self.connection, self.kind, self.name, start, end, desc)

    async def contains(self, item: Job | str) -> bool:
        """What ``item in registry`` is in rq."""
        job_id = item if isinstance(item, str) else item.id
        return job_id in await self.get_job_ids(cleanup=False)

    async def requeue(self, job_or_id: Job | str, at_front: bool = False) -> Job:
        """Put a job back on its queue (``InvalidJobOperation`` if it is not in this registry)."""
        if isinstance(job_or_id, str):
            job = await self.job_class.fetch(job_or_id, self.connection, self.serializer)
        else:
            job = job_or_id
        await p.jobs.requeue(self.connection, job._rq, self.key, at_front=at_front)
        return job

    async def get_expired_job_ids(self, timestamp: int | None = None) -> list[str]:
        return await p.registries.expired_job_ids(self.connection, self.kind, self.name, timestamp)

    async def get_expiration_time(self, job: Job) -> datetime:
        score = await p.registries.score(self.connection, self.kind, self.name, job.id)
        return datetime.fromtimestamp(score, timezone.utc)  # type: ignore[arg-type]


class _IdRegistry(BaseRegistry):
    """Registries whose members are bare job ids: they can add, remove and requeue."""

    async def add(self, job: Job, ttl: int = 0, pipeline: Any = None, xx: bool = False) -> int:
        return await p.registries.add(self.connection, self.kind, self.name, job.id, ttl, xx, pipeline)

    async def remove(self, job: Job | str, pipeline: Any = None, delete_job: bool = False) -> int:
        job_id = job if isinstance(job, str) else job.id
        result = await p.registries.remove_members(self.connection, self.kind, self.name, [job_id], pipeline)
        if delete_job:
            target = (
                job
                if not isinstance(job, str)
                else await self.job_class.fetch(job_id, self.connection, self.serializer)
            )
            await target.delete()
        return result


def _callback_runner(connection: Redis, job_class: type[Job]) -> CallbackRunner:
    """How cleanup runs an abandoned job's failure callback: a blocking one in a thread with
    ``(job, sync connection, *exc_info)`` as in rq; a coroutine one, as the worker runs it, with
    an ``aiorq.Job`` and the async client, under its timeout."""

    async def run(rq_job: RQJob, callback: Callable[..., Any], timeout: Any, *args: Any) -> None:
        if inspect.iscoroutinefunction(callback):
            await asyncio.wait_for(callback(job_class._wrap(rq_job, connection), connection, *args), timeout)
            return

        def call() -> None:
            sync = sync_connection(connection)
            try:
                rq_job.connection = sync
                callback(rq_job, sync, *args)
            finally:
                rq_job.connection = p.codec.NOIO
                sync.close()

        await asyncio.to_thread(call)

    return run


def _abandoned_hook(
    connection: Redis, job_class: type[Job], exception_handlers: Sequence[Callable[..., Any]] | None
) -> Callable[[RQJob], Any]:
    """What rq does for each abandoned job (``aiorq.handlers.handle_abandoned``): its failure
    callback, then the exception handlers, each given the job as an ``aiorq.Job``."""
    run_callback = _callback_runner(connection, job_class)

    async def on_abandoned(rq_job: RQJob) -> None:
        async def handlers(exc_info: ExcInfo) -> None:
            if exception_handlers:
                await call_exception_handlers(exception_handlers, job_class._wrap(rq_job, connection), exc_info)

        await handle_abandoned(rq_job, run_callback, handlers)

    return on_abandoned


class StartedJobRegistry(BaseRegistry):
    """Executions in flight; members are ``<job id>:<execution id>``."""

    kind = 'started'

    @staticmethod
    def parse_job_id(entry: str) -> str:
        return p.registries.parse_member('started', entry)

    async def cleanup(self, timestamp: int | None = None, exception_handlers: list[Any] | None = None) -> list[Job]:
        """Fail (or retry) jobs whose execution deadline passed, as any rq process does; each one
        goes to ``exception_handlers`` as ``(job, AbandonedJobError, AbandonedJobError(), None)``."""
        conn = self.connection
        processed = await p.registries.cleanup_started(
            conn,
            self.name,
            serializer=self.serializer,
            on_abandoned=_abandoned_hook(conn, self.job_class, exception_handlers),
            timestamp=timestamp,
        )
        return [self.job_class._wrap(j, self._connection) for j in processed]

    async def add(self, job: Job, ttl: int = 0, pipeline: Any = None, xx: bool = False) -> int:
        """Refused, as in rq: members are executions, which only a worker adds."""
        raise NotImplementedError('StartedJobRegistry holds executions, which only a worker adds')

    async def remove(self, job: Job | str, pipeline: Any = None, delete_job: bool = False) -> int:
        """Refused, as in rq: use ``remove_executions(job)``."""
        raise NotImplementedError('StartedJobRegistry holds executions: use await registry.remove_executions(job)')

    async def remove_executions(self, job: Job, pipeline: Any = None) -> None:
        """Remove every execution of ``job`` from this registry."""
        members = [e.composite_key for e in await job.get_executions()]
        if members:
            await p.registries.remove_members(self.connection, self.kind, self.name, members, pipeline=pipeline)

    async def get_job_and_execution_ids(
        self, start: int = 0, end: int = -1, desc: bool = False, cleanup: bool = True
    ) -> list[tuple[str, str]]:
        if cleanup:
            await self.cleanup()
        return await p.registries.job_and_execution_ids(self.connection, self.name, start, end, desc)


class FinishedJobRegistry(_IdRegistry):
    kind = 'finished'


class FailedJobRegistry(_IdRegistry):
    kind = 'failed'

    async def add(  # type: ignore[override]
        self, job: Job, ttl: int | None = None, exc_string: str = '', pipeline: Any = None
    ) -> None:
        """Save the job with its failure and put it here for ``ttl`` (default one year)."""
        if ttl is not None:
            job.failure_ttl = ttl
        await p.outcomes.failed_registry_add(self.connection, job._rq, exc_string, pipeline=pipeline)


class DeferredJobRegistry(_IdRegistry):
    kind = 'deferred'

    async def add(self, job: Job, ttl: int | None = None, pipeline: Any = None, xx: bool = False) -> int:
        return await p.registries.add_now(self.connection, self.kind, self.name, job.id, xx, pipeline=pipeline)


class ReadyJobRegistry(DeferredJobRegistry):
    """Dependents whose dependencies are met but which are not pushed yet (rq 3.0)."""

    kind = 'ready'

    async def enqueue_jobs(self, job_ids: list[str]) -> list[Job]:
        jobs = await p.dependents.enqueue_ready_jobs(self.connection, self.name, job_ids, serializer=self.serializer)
        return [self.job_class._wrap(j, self._connection) for j in jobs]

    async def cleanup(self, timestamp: int | None = None, exception_handlers: list[Any] | None = None) -> list[Job]:
        return await self.enqueue_jobs(await p.registries.job_ids(self.connection, self.kind, self.name))


class ScheduledJobRegistry(_IdRegistry):
    kind = 'scheduled'

    async def schedule(self, job: Job, scheduled_datetime: datetime, pipeline: Any = None) -> int:
        score = p.enqueue.schedule_score(scheduled_datetime)
        return await p.registries.schedule(self.connection, self.name, job.id, score, pipeline=pipeline)

    async def get_jobs_to_enqueue(self, timestamp: int | None = None) -> list[str]:
        """The ids due by ``timestamp`` (rq's alias of ``get_expired_job_ids`` here)."""
        return await self.get_expired_job_ids(timestamp)

    async def get_jobs_to_schedule(self, timestamp: int | None = None, chunk_size: int = 1000) -> list[str]:
        ids = await p.registries.expired_job_ids(self.connection, self.kind, self.name, timestamp)
        return ids[:chunk_size]

    async def get_scheduled_time(self, job_or_id: Job | str) -> datetime:
        job_id = job_or_id if isinstance(job_or_id, str) else job_or_id.id
        score = await p.registries.score(self.connection, self.kind, self.name, job_id)
        if not score:
            raise NoSuchJobError
        return datetime.fromtimestamp(score, tz=timezone.utc)


class CanceledJobRegistry(_IdRegistry):
    kind = 'canceled'

    async def get_expired_job_ids(self, timestamp: int | None = None) -> list[str]:
        raise NotImplementedError


class ExecutionRegistry:
    """A job's executions (``rq:executions:<job id>``): what ``job.execution_registry`` is in rq.

    Read-side: executions are added and removed by the worker running them.
    """

    key_template = p.keys.executions('{0}')

    def __init__(self, job_id: str, connection: Redis | None = None) -> None:
        self.job_id = job_id
        self._connection = connection if connection is not None else current_connection_or_none()

    @property
    def connection(self) -> Redis:
        return resolve_connection(self._connection)

    @property
    def key(self) -> str:
        return p.keys.executions(self.job_id)

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}({self.job_id!r})'

    async def cleanup(self, timestamp: int | None = None, exception_handlers: list[Any] | None = None) -> None:
        """Forget executions whose deadline passed."""
        await p.jobs.cleanup_executions(self.connection, self.job_id, timestamp)

    async def get_execution_ids(self, start: int = 0, end: int = -1) -> list[str]:
        return await p.jobs.execution_ids(self.connection, self.job_id, start, end)

    async def get_executions(self, start: int = 0, end: int = -1) -> list[Execution]:
        """Each execution's hash (``ValueError`` if one vanished, as rq's ``Execution.fetch``)."""
        return await p.jobs.get_executions(self.connection, self.job_id, start, end)


async def clean_registries(queue: Queue, exception_handlers: list[Any] | None = None) -> None:
    """What ``rq.registry.clean_registries`` does for one queue (also what ``rq info`` runs)."""
    conn = queue.connection
    await p.registries.clean_registries(
        conn,
        queue.name,
        serializer=queue.serializer,
        on_abandoned=_abandoned_hook(conn, queue.job_class, exception_handlers),
    )
