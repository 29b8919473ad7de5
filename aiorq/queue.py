"""``aiorq.Queue``: rq 3.0's queue API, awaited."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Coroutine, Iterable
from datetime import datetime, timedelta
from functools import total_ordering
from typing import Any, NoReturn, TypeVar, overload

from redis.asyncio import Redis
from rq.callbacks import Callback
from rq.exceptions import NoSuchJobError
from rq.job import JobStatus
from rq.queue import EnqueueArgs, EnqueueData
from rq.queue import Queue as RQQueue
from rq.serializers import resolve_serializer
from rq.utils import import_attribute, now, resolve_function_reference

from . import protocol as p
from . import tracing as _tracing
from ._awaitable import AwaitableProperty, refuse
from .connections import current_connection_or_none, resolve_connection
from .job import Job, _unwrap_dependencies, checked_job_class
from .protocol.lean_enqueue import Maker, plain_options
from .registry import (
    CanceledJobRegistry,
    DeferredJobRegistry,
    FailedJobRegistry,
    FinishedJobRegistry,
    ReadyJobRegistry,
    ScheduledJobRegistry,
    StartedJobRegistry,
)

__all__ = ['Queue', 'EnqueueData']

logger = logging.getLogger('aiorq.queue')

R = TypeVar('R')

SYNC_QUEUES_UNSUPPORTED = (
    'aiorq does not support synchronous queues (is_async=False): keep business logic apart from the '
    'queue and test it directly, or patch Queue.enqueue in tests. See docs/queues.md, "Bypassing workers".'
)


# Functions already found importable: the check imports by name, which costs more than an
# enqueue's own work, and a module-level function's answer does not change.
_IMPORTABLE: dict[Any, None] = {}


def check_importable(func: Any) -> None:
    """aiorq refuses at enqueue what a worker could never import (rq fails later, in the worker)."""
    try:
        if func in _IMPORTABLE:
            return
    except TypeError:  # unhashable callable: check it every time
        pass
    if isinstance(func, str) or inspect.isclass(func):
        return
    instance, func_name = resolve_function_reference(func)
    if instance is not None:
        return
    if '<lambda>' in func_name or '<locals>' in func_name:
        raise ValueError(
            f'{func_name} cannot be enqueued: workers import functions by name, use a module-level function'
        )
    try:
        found = import_attribute(func_name)
    except Exception as e:
        raise ValueError(f'{func_name} cannot be enqueued: it does not import back ({e})') from e
    if found is not func and getattr(found, '__wrapped__', None) is not func:
        raise ValueError(f'{func_name} cannot be enqueued: importing that name gives a different object')
    if len(_IMPORTABLE) < 10_000:
        try:
            _IMPORTABLE[func] = None
        except TypeError:
            pass


def _callback_func(cb: Any) -> Any:
    func = cb.func if isinstance(cb, Callback) else cb
    if isinstance(func, str):
        try:
            func = import_attribute(func)
        except Exception:
            return None
    return func


def warn_coroutine_callbacks(**callbacks: Any) -> None:
    for kind, cb in callbacks.items():
        if cb is not None and inspect.iscoroutinefunction(_callback_func(cb)):
            logger.warning(
                'A coroutine function is passed as %s: stock rq 3.0 workers reject coroutine callbacks '
                '(TypeError), so this job fails if a stock rq worker runs it; only aiorq workers await it.',
                kind,
            )


@total_ordering
class Queue:
    """A named queue on a ``redis.asyncio.Redis`` (explicit, or the current connection)."""

    DEFAULT_TIMEOUT = RQQueue.DEFAULT_TIMEOUT
    redis_queue_namespace_prefix = p.keys.QUEUE_PREFIX
    redis_queues_keys = p.keys.QUEUES

    def __init__(
        self,
        name: str = 'default',
        connection: Redis | None = None,
        default_timeout: int | str | None = None,
        is_async: bool = True,
        job_class: type[Job] | None = None,
        serializer: Any = None,
        **kwargs: Any,
    ) -> None:
        # rq still reads the pre-3.7 spelling ``async`` from kwargs; refuse it the same way.
        if not is_async or not kwargs.get('async', True):
            raise ValueError(SYNC_QUEUES_UNSUPPORTED)
        self.name = name
        self._connection = connection if connection is not None else current_connection_or_none()
        self.serializer = resolve_serializer(serializer)
        self._codec = p.codec.codec_queue(name, self.serializer, default_timeout)
        self._default_timeout: int = self._codec._default_timeout
        self._maker = Maker(name, self._codec.serializer, self._default_timeout)
        self.job_class: type[Job] = checked_job_class(job_class)
        # A queue with such a name can be read (its keys may exist), never written to.
        self._reserved = p.keys.reserved_queue_name(name)

    def _refuse_reserved(self) -> None:
        """Every enqueue path passes here before anything is written (aiorq's rule, not rq's)."""
        if self._reserved is not None:
            raise ValueError(f'Queue name {self.name!r} is reserved: {self._reserved}')

    @property
    def connection(self) -> Redis:
        return resolve_connection(self._connection)

    @property
    def key(self) -> str:
        return p.keys.queue(self.name)

    @property
    def intermediate_queue_key(self) -> str:
        return p.keys.intermediate(self.name)

    @property
    def registry_cleaning_key(self) -> str:
        return p.keys.cleaning_lock(self.name)

    @property
    def is_async(self) -> bool:
        return True

    @classmethod
    async def all(
        cls, connection: Redis | None = None, job_class: type[Job] | None = None, serializer: Any = None
    ) -> list[Queue]:
        conn = resolve_connection(connection)
        names = await p.queues.all_names(conn)
        return [cls(name, connection=conn, job_class=job_class, serializer=serializer) for name in names]

    @classmethod
    def from_queue_key(cls, queue_key: str, connection: Redis | None = None, **kwargs: Any) -> Queue:
        return cls(p.keys.queue_name(queue_key), connection=connection, **kwargs)

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}({self.name!r})'

    def __str__(self) -> str:
        return f'<{self.__class__.__name__} {self.name}>'

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Queue) and self.name == other.name

    def __lt__(self, other: Queue) -> bool:
        return self.name < other.name

    def __hash__(self) -> int:
        return hash(self.name)

    def __bool__(self) -> bool:
        return True

    def __len__(self) -> NoReturn:
        refuse('len(queue)', 'await queue.count')

    # -- reading ---------------------------------------------------------------------------

    @property
    def count(self) -> AwaitableProperty[int]:
        return AwaitableProperty(lambda: p.queues.count(self.connection, self.name), 'queue.count')

    @property
    def job_ids(self) -> AwaitableProperty[list[str]]:
        return AwaitableProperty(self.get_job_ids, 'queue.job_ids')

    @property
    def jobs(self) -> AwaitableProperty[list[Job]]:
        return AwaitableProperty(self.get_jobs, 'queue.jobs')

    async def is_empty(self) -> bool:
        return await p.queues.count(self.connection, self.name) == 0

    async def get_job_ids(self, offset: int = 0, length: int = -1) -> list[str]:
        return await p.queues.job_ids(self.connection, self.name, offset, length)

    async def get_jobs(self, offset: int = 0, length: int = -1) -> list[Job]:
        jobs = [await self.fetch_job(job_id) for job_id in await self.get_job_ids(offset, length)]
        return [j for j in jobs if j is not None]

    async def fetch_job(self, job_id: str) -> Job[Any] | None:
        """The job if it exists and belongs here; a missing id is removed from the list, as in rq."""
        try:
            job = await self.job_class.fetch(job_id, self.connection, self.serializer)
        except NoSuchJobError:
            await self.remove(job_id)
            return None
        return job if job.origin == self.name else None

    async def get_job_position(self, job_or_id: Job | str) -> int | None:
        job_id = job_or_id.id if isinstance(job_or_id, Job) else job_or_id
        return await p.jobs.position(self.connection, self.name, job_id)

    # -- changing the list -----------------------------------------------------------------

    async def remove(self, job_or_id: Job | str, pipeline: Any = None) -> int | None:
        job_id = job_or_id.id if isinstance(job_or_id, Job) else job_or_id
        if pipeline is not None:
            pipeline.lrem(self.key, 1, job_id)
            return None
        return await p.queues.remove(self.connection, self.name, job_id)

    async def push_job_id(self, job_id: str, pipeline: Any = None, at_front: bool = False) -> None:
        """Push an id onto the queue (rq's low-level ``push_job_id``)."""
        if pipeline is not None:
            (pipeline.lpush if at_front else pipeline.rpush)(self.key, job_id)
            return
        await p.queues.push(self.connection, self.name, job_id, at_front)

    async def pop_job_id(self) -> str | None:
        return await p.queues.pop(self.connection, self.name)

    @property
    def scheduler_pid(self) -> AwaitableProperty[int | None]:
        return AwaitableProperty(lambda: p.queues.scheduler_pid(self.connection, self.name), 'queue.scheduler_pid')

    async def acquire_maintenance_lock(self) -> bool:
        """rq's per-queue maintenance lock (``SET … NX EX 899``)."""
        return await p.maintenance.acquire_cleaning_lock(self.connection, self.name)

    async def release_maintenance_lock(self) -> None:
        await p.maintenance.release_cleaning_lock(self.connection, self.name)

    async def compact(self) -> None:
        await p.queues.compact(self.connection, self.name)

    async def empty(self) -> int:
        """Remove every waiting job (hash, results and dependents set); returns how many."""
        return await p.queues.empty(self.connection, self.name)

    async def delete(self, delete_jobs: bool = True) -> None:
        await p.queues.delete(self.connection, self.name, delete_jobs)

    # -- creating jobs ---------------------------------------------------------------------

    def create_job(self, func: Any, args: Any = None, kwargs: Any = None, **options: Any) -> Job:
        """``rq.Queue.create_job`` (no I/O), refusing functions no worker could import and
        serializing everything up front so nothing is written for a bad argument."""
        job = self._create_job(func, args, kwargs, **options)
        p.codec.checked_mapping(job._rq)
        return job

    def _create_job(self, func: Any, args: Any = None, kwargs: Any = None, **options: Any) -> Job:
        """:meth:`create_job` without the serialization check (for callers that serialize
        the job before anything is sent, so a bad argument still writes nothing)."""
        self._refuse_reserved()
        check_importable(func)
        warn_coroutine_callbacks(
            on_success=options.get('on_success'),
            on_failure=options.get('on_failure'),
            on_stopped=options.get('on_stopped'),
        )
        if options.get('depends_on') is not None:
            options['depends_on'] = _unwrap_dependencies(options['depends_on'])
        rq_job = self._codec.create_job(func, args=args, kwargs=kwargs, **options)
        if _tracing.ENABLED:
            _tracing.inject(rq_job)  # the enqueuing trace, carried in meta to the worker
        return self.job_class._wrap(rq_job, self._connection)

    def _lean_job(self, func: Any, args: Any, kwargs: Any, **options: Any) -> Job:
        """:meth:`_create_job` (status ``queued``) for a call ``lean_enqueue``'s rule lets through:
        the same job, made without rq's ``create_job`` (``options``: ``Maker.job``'s)."""
        self._refuse_reserved()
        check_importable(func)
        rq_job = self._maker.job(func, args, kwargs, **options)
        if _tracing.ENABLED:
            _tracing.inject(rq_job)
        return self.job_class._wrap(rq_job, self._connection)

    # Typed for the result only: the arguments share ``kwargs`` with rq's options, so only
    # ``@job``'s ``delay`` and ``options(...).delay`` check them (docs/typed-tasks.md).
    @overload
    async def enqueue(self, f: Callable[..., Coroutine[Any, Any, R]], *args: Any, **kwargs: Any) -> Job[R]: ...

    @overload
    async def enqueue(self, f: Callable[..., R], *args: Any, **kwargs: Any) -> Job[R]: ...

    @overload
    async def enqueue(self, f: str, *args: Any, **kwargs: Any) -> Job[Any]: ...

    async def enqueue(self, f: Any, *args: Any, **kwargs: Any) -> Job[Any]:
        """Enqueue ``f(*args, **kwargs)``; rq's options (``job_timeout``, ``depends_on``, …) are
        taken out of ``kwargs`` exactly as ``rq.Queue.enqueue`` does."""
        return await self._enqueue_parsed(RQQueue.parse_args(f, *args, **kwargs))

    async def _enqueue_parsed(self, ea: EnqueueArgs) -> Job[Any]:
        """Enqueue a call whose options are already apart from its arguments."""
        return await self.enqueue_call(
            func=ea.func,
            args=ea.args,
            kwargs=ea.kwargs,
            timeout=ea.timeout,
            result_ttl=ea.result_ttl,
            ttl=ea.ttl,
            failure_ttl=ea.failure_ttl,
            description=ea.description,
            depends_on=ea.depends_on,
            job_id=ea.job_id,
            at_front=ea.at_front,
            meta=ea.meta,
            retry=ea.retry,
            repeat=ea.repeat,
            on_success=ea.on_success,
            on_failure=ea.on_failure,
            on_stopped=ea.on_stopped,
            rate_limit=ea.rate_limit,
            webhooks=ea.webhooks,
            pipeline=ea.pipeline,
            unique=ea.unique,
        )

    @_tracing.traced_enqueue
    async def enqueue_call(
        self,
        func: Any,
        args: Any = None,
        kwargs: Any = None,
        timeout: Any = None,
        result_ttl: Any = None,
        ttl: Any = None,
        failure_ttl: Any = None,
        description: str | None = None,
        depends_on: Any = None,
        job_id: str | None = None,
        at_front: bool = False,
        meta: dict[str, Any] | None = None,
        retry: Any = None,
        repeat: Any = None,
        on_success: Any = None,
        on_failure: Any = None,
        on_stopped: Any = None,
        rate_limit: Any = None,
        pipeline: Any = None,
        unique: bool = False,
        webhooks: Any = None,
    ) -> Job:
        if unique and not job_id:
            raise ValueError('unique=True requires an explicit job_id')
        plain = pipeline is None and not unique and depends_on is None and rate_limit is None
        if plain and plain_options(depends_on, retry, repeat, on_success, on_failure, on_stopped, webhooks, rate_limit):
            job = self._lean_job(
                func,
                args,
                kwargs,
                timeout=timeout,
                result_ttl=result_ttl,
                ttl=ttl,
                failure_ttl=failure_ttl,
                description=description,
                job_id=job_id,
                meta=meta,
            )
            return await self.enqueue_job(job, at_front=at_front)
        # A plain job is serialized once, by the one-round-trip write, before anything is sent.
        job = (self._create_job if plain else self.create_job)(
            func,
            args=args,
            kwargs=kwargs,
            result_ttl=result_ttl,
            ttl=ttl,
            failure_ttl=failure_ttl,
            description=description,
            depends_on=depends_on,
            job_id=job_id,
            meta=meta,
            status=JobStatus.QUEUED,
            timeout=timeout,
            retry=retry,
            repeat=repeat,
            on_success=on_success,
            on_failure=on_failure,
            on_stopped=on_stopped,
            rate_limit=rate_limit,
            webhooks=webhooks,
        )
        return await self.enqueue_job(job, pipeline=pipeline, at_front=at_front, unique=unique)

    async def enqueue_job(self, job: Job, pipeline: Any = None, at_front: bool = False, unique: bool = False) -> Job:
        """Enqueue a created job, deferring it while a dependency is unfinished."""
        self._refuse_reserved()
        await p.enqueue.enqueue_job(
            self.connection,
            job._rq,
            self.name,
            self._default_timeout,
            at_front=at_front,
            pipeline=pipeline,
            unique=unique,
        )
        return job

    # ``rq.Queue.prepare_data`` itself (pure): one item for :meth:`enqueue_many`.
    prepare_data = staticmethod(RQQueue.prepare_data)

    @_tracing.traced_enqueue
    async def enqueue_many(
        self, job_datas: Iterable[EnqueueData], pipeline: Any = None, group_id: str | None = None
    ) -> list[Job]:
        """Enqueue many jobs at once; ``group_id`` is stored on each job as rq does."""
        seen: set[str] = set()
        datas = list(job_datas)
        # A batch without dependencies is written in one call that serializes every job before
        # anything is sent; any other batch is checked job by job as it is created.
        lean = pipeline is None and not any(d.depends_on for d in datas)
        items: list[tuple[Job, bool]] = []
        for data in datas:
            if data.job_id is not None:
                if data.job_id in seen:
                    raise ValueError(f"Job ID '{data.job_id}' appears more than once in enqueue_many()")
                seen.add(data.job_id)
            items.append((self._many_item(data, group_id, lean), bool(data.at_front)))
        # The protocol layer returns the same rq jobs in its own order: found by identity.
        by_rq = {id(job._rq): job for job, _ in items}
        done = await p.enqueue.enqueue_many(
            self.connection, [(j._rq, f) for j, f in items], self.name, self._default_timeout, pipeline=pipeline
        )
        return [by_rq[id(r)] for r in done]

    def _many_item(self, data: EnqueueData, group_id: str | None, lean: bool) -> Job:
        """The job of one :meth:`enqueue_many` item: lean when the batch is written in one call
        (serialized before anything is sent) and ``lean_enqueue``'s rule lets the item through."""
        options: dict[str, Any] = {
            'timeout': data.timeout,
            'result_ttl': data.result_ttl,
            'ttl': data.ttl,
            'failure_ttl': data.failure_ttl,
            'description': data.description,
            'job_id': data.job_id,
            'meta': data.meta,
            'group_id': group_id,
        }
        extra = (data.depends_on, data.retry, data.repeat, data.on_success, data.on_failure, data.on_stopped)
        if lean and plain_options(*extra, data.webhooks, None):
            return self._lean_job(data.func, data.args, data.kwargs, **options)
        return (self._create_job if lean else self.create_job)(
            data.func,
            args=data.args,
            kwargs=data.kwargs,
            depends_on=data.depends_on,
            status=JobStatus.DEFERRED if data.depends_on else JobStatus.QUEUED,
            retry=data.retry,
            on_success=data.on_success,
            on_failure=data.on_failure,
            on_stopped=data.on_stopped,
            webhooks=data.webhooks,
            repeat=data.repeat,
            **options,
        )

    async def enqueue_at(self, datetime: datetime, f: Any, *args: Any, **kwargs: Any) -> Job[Any]:
        """Schedule ``f`` for ``datetime`` (naive means local time, as in rq)."""
        return await self._schedule_parsed(datetime, RQQueue.parse_args(f, *args, **kwargs))

    @_tracing.traced_enqueue
    async def _schedule_parsed(self, datetime: datetime, ea: EnqueueArgs) -> Job[Any]:
        """Schedule a call whose options are already apart from its arguments."""
        job = self.create_job(
            ea.func,
            status=JobStatus.SCHEDULED,
            args=ea.args,
            kwargs=ea.kwargs,
            timeout=ea.timeout,
            result_ttl=ea.result_ttl,
            ttl=ea.ttl,
            failure_ttl=ea.failure_ttl,
            description=ea.description,
            depends_on=ea.depends_on,
            job_id=ea.job_id,
            meta=ea.meta,
            retry=ea.retry,
            repeat=ea.repeat,
            on_success=ea.on_success,
            on_failure=ea.on_failure,
            on_stopped=ea.on_stopped,
            rate_limit=ea.rate_limit,
            webhooks=ea.webhooks,
        )
        if ea.at_front:
            job.enqueue_at_front = True
        return await self.schedule_job(job, datetime, pipeline=ea.pipeline, unique=ea.unique)

    async def enqueue_in(self, time_delta: timedelta, func: Any, *args: Any, **kwargs: Any) -> Job:
        return await self.enqueue_at(now() + time_delta, func, *args, **kwargs)

    async def schedule_job(self, job: Job, datetime: datetime, pipeline: Any = None, unique: bool = False) -> Job:
        self._refuse_reserved()
        await p.enqueue.schedule_job(self.connection, job._rq, self.name, datetime, pipeline=pipeline, unique=unique)
        return job

    # -- dependents ------------------------------------------------------------------------

    async def enqueue_dependents(self, job: Job, exclude_job_id: str | None = None) -> dict[str, list[str]]:
        return await p.dependents.enqueue_dependents(
            self.connection, job._rq, exclude_job_id=exclude_job_id, serializer=self.serializer
        )

    async def enqueue_ready_jobs_by_queue(self, job_ids_by_queue_name: dict[str, list[str]]) -> None:
        await p.dependents.enqueue_ready_by_queue(self.connection, job_ids_by_queue_name, serializer=self.serializer)

    # -- registries ------------------------------------------------------------------------

    def _registry(self, cls: Any) -> Any:
        return cls(self.name, connection=self._connection, job_class=self.job_class, serializer=self.serializer)

    @property
    def started_job_registry(self) -> StartedJobRegistry:
        return self._registry(StartedJobRegistry)

    @property
    def finished_job_registry(self) -> FinishedJobRegistry:
        return self._registry(FinishedJobRegistry)

    @property
    def failed_job_registry(self) -> FailedJobRegistry:
        return self._registry(FailedJobRegistry)

    @property
    def deferred_job_registry(self) -> DeferredJobRegistry:
        return self._registry(DeferredJobRegistry)

    @property
    def ready_job_registry(self) -> ReadyJobRegistry:
        return self._registry(ReadyJobRegistry)

    @property
    def scheduled_job_registry(self) -> ScheduledJobRegistry:
        return self._registry(ScheduledJobRegistry)

    @property
    def canceled_job_registry(self) -> CanceledJobRegistry:
        return self._registry(CanceledJobRegistry)
