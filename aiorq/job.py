"""``aiorq.Job``: rq's job, with every Redis call awaited."""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import rq.job
from redis.asyncio import Redis
from rq.exceptions import NoSuchJobError
from rq.executions import Execution
from rq.job import Job as RQJob
from rq.job import JobStatus

from . import protocol as p
from ._awaitable import AwaitableProperty
from .connections import current_connection_or_none, resolve_connection
from .registry import ExecutionRegistry, FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry
from .results import JobCanceled, JobFailed, JobStopped, Result

if TYPE_CHECKING:
    from .queue import Queue

__all__ = ['Dependency', 'Job', 'JobStatus']

R_co = TypeVar('R_co', covariant=True)

# How often ``Job.wait`` re-reads the status while no result comes: a cancel or a delete writes
# no result to wake it (a result wakes it at once, whatever this is).
WAIT_RECHECK_INTERVAL = 2.0
_DONE = (JobStatus.FINISHED, JobStatus.FAILED, JobStatus.STOPPED)
_FAILURES = (Result.Type.FAILED, Result.Type.STOPPED, Result.Type.MAX_RETRIES_EXCEEDED)


class _Field:
    """A plain attribute kept on the underlying rq codec object."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Job | None, owner: type | None = None) -> Any:
        if obj is None:
            return self
        return getattr(obj._rq, self.name)

    def __set__(self, obj: Job, value: Any) -> None:
        setattr(obj._rq, self.name, value)


class _Payload(_Field):
    """A field stored inside ``data``; decoding errors name the job."""

    def __get__(self, obj: Job | None, owner: type | None = None) -> Any:
        if obj is None:
            return self
        if obj._rq._func_name is p.codec.UNEVALUATED:
            p.codec.load_data(obj._rq)
        return getattr(obj._rq, self.name)


class Job(Generic[R_co]):
    """A job; pure attributes behave as in rq, I/O is awaited.

    ``is_finished`` and friends are awaitable properties (``await job.is_finished``); methods are
    coroutines (``await job.get_status()``). ``job.rq_job`` is the underlying ``rq.job.Job`` codec.
    ``Job[R]`` is a job whose function returns ``R`` (an ``async def`` one: what it awaits to);
    typing only, nothing of it is stored.
    """

    redis_job_namespace_prefix = p.keys.JOB_PREFIX

    # Pure attributes, shared with rq.job.Job.
    origin = _Field()
    description = _Field()
    created_at = _Field()
    enqueued_at = _Field()
    started_at = _Field()
    ended_at = _Field()
    last_heartbeat = _Field()
    timeout = _Field()
    result_ttl = _Field()
    failure_ttl = _Field()
    ttl = _Field()
    meta = _Field()
    worker_name = _Field()
    group_id = _Field()
    retries_left = _Field()
    retry_intervals = _Field()
    number_of_retries = _Field()
    repeats_left = _Field()
    repeat_intervals = _Field()
    allow_dependency_failures = _Field()
    enqueue_at_front = _Field()
    enqueue_at_front_on_retry = _Field()
    webhooks = _Field()
    rate_limit_key = _Field()
    rate_limit_concurrency = _Field()
    serializer = _Field()
    func_name = _Payload()
    instance = _Payload()
    args = _Payload()
    kwargs = _Payload()

    def __init__(self, id: str | None = None, connection: Redis | None = None, serializer: Any = None) -> None:
        self._rq = p.codec.new_job(id, serializer)
        self._connection = connection if connection is not None else current_connection_or_none()
        self._cached_result: Result[Any] | None = None

    @classmethod
    def _wrap(cls, rq_job: RQJob, connection: Redis | None) -> Job[Any]:
        job = cls.__new__(cls)
        job._rq = rq_job
        job._connection = connection
        job._cached_result = None
        return job

    # -- identity and pure helpers ------------------------------------------------------------

    @property
    def connection(self) -> Redis:
        return resolve_connection(self._connection)

    @property
    def rq_job(self) -> RQJob:
        return self._rq

    @property
    def id(self) -> str:
        return self._rq.id

    @property
    def key(self) -> str:
        return p.keys.job(self.id)

    @property
    def dependents_key(self) -> str:
        return p.keys.dependents(self.id)

    @property
    def dependencies_key(self) -> str:
        return p.keys.dependencies(self.id)

    @property
    def data(self) -> bytes:
        return self._rq.data

    @property
    def func(self) -> Any:
        p.codec.load_data(self._rq)
        return self._rq.func

    @property
    def has_rate_limit(self) -> bool:
        return self._rq.has_rate_limit

    @property
    def _dependency_ids(self) -> list[str]:
        return self._rq._dependency_ids

    @property
    def success_callback(self) -> Callable[..., Any] | None:
        """The success callback, imported by name (as rq does; ``None`` when unset)."""
        return self._rq.success_callback

    @property
    def failure_callback(self) -> Callable[..., Any] | None:
        return self._rq.failure_callback

    @property
    def stopped_callback(self) -> Callable[..., Any] | None:
        return self._rq.stopped_callback

    @property
    def success_callback_timeout(self) -> int:
        return self._rq.success_callback_timeout

    @property
    def failure_callback_timeout(self) -> int:
        return self._rq.failure_callback_timeout

    @property
    def stopped_callback_timeout(self) -> int:
        return self._rq.stopped_callback_timeout

    @staticmethod
    def key_for(job_id: str) -> str:
        return p.keys.job(job_id)

    @staticmethod
    def dependents_key_for(job_id: str) -> str:
        return p.keys.dependents(job_id)

    def get_call_string(self) -> str | None:
        return self._rq.get_call_string()

    def to_dict(self, include_meta: bool = True, include_result: bool = True) -> dict[str, Any]:
        return p.codec.mapping(self._rq, include_meta, include_result)

    def should_enqueue_at_front(self) -> bool:
        return self._rq.should_enqueue_at_front()

    def get_retry_interval(self) -> int:
        return self._rq.get_retry_interval()

    def get_result_ttl(self, default_ttl: int) -> int:
        return self._rq.get_result_ttl(default_ttl)

    def get_ttl(self, default_ttl: int | None = None) -> int | None:
        return self._rq.get_ttl(default_ttl)

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}({self.id!r}, enqueued_at={self.enqueued_at!r})'

    def __str__(self) -> str:
        return f'<{self.__class__.__name__} {self.id}: {self.description}>'

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Job) and self.id == other.id

    def __hash__(self) -> int:
        return hash(self.id)

    # -- construction and fetching ------------------------------------------------------------

    @classmethod
    def create(
        cls, func: Any, args: Any = None, kwargs: Any = None, connection: Redis | None = None, **options: Any
    ) -> Job[Any]:
        """``rq.job.Job.create`` without I/O; options as rq's (``result_ttl``, ``depends_on``, …)."""
        depends_on = options.pop('depends_on', None)
        if depends_on is not None:
            options['depends_on'] = _unwrap_dependencies(depends_on)
        rq_job = RQJob.create(func, args=args, kwargs=kwargs, connection=p.codec.NOIO, **options)
        return cls._wrap(rq_job, connection if connection is not None else current_connection_or_none())

    @classmethod
    async def fetch(cls, id: str, connection: Redis | None = None, serializer: Any = None) -> Job[Any]:
        """Load a job by id (``<id>:<execution>`` accepted); ``NoSuchJobError`` if missing."""
        conn = resolve_connection(connection)
        return cls._wrap(await p.jobs.fetch(conn, id, serializer), conn)

    @classmethod
    async def fetch_many(
        cls, job_ids: Iterable[str], connection: Redis | None = None, serializer: Any = None
    ) -> list[Job[Any] | None]:
        conn = resolve_connection(connection)
        return [
            None if j is None else cls._wrap(j, conn) for j in await p.jobs.fetch_many(conn, list(job_ids), serializer)
        ]

    @classmethod
    async def exists(cls, job_id: str, connection: Redis | None = None) -> bool:
        return await p.jobs.exists(resolve_connection(connection), job_id)

    async def refresh(self) -> None:
        fresh = await p.jobs.fetch(self.connection, self.id, self.serializer)
        self._rq = fresh
        self._cached_result = None

    async def save(self, pipeline: Any = None, include_meta: bool = True, include_result: bool = True) -> None:
        await p.jobs.save(self.connection, self._rq, pipeline, include_meta, include_result)

    async def save_meta(self) -> None:
        await p.jobs.save_meta(self.connection, self._rq)

    async def get_meta(self, refresh: bool = True) -> dict[str, Any]:
        if refresh:
            return await p.jobs.get_meta(self.connection, self._rq)
        return self._rq.meta

    # -- status ----------------------------------------------------------------------------

    async def get_status(self, refresh: bool = True) -> JobStatus | None:
        if refresh:
            status = await p.jobs.get_status(self.connection, self.id)
            if status is not None:
                self._rq._status = status
            return status
        return self._rq.get_status(refresh=False)

    async def set_status(self, status: JobStatus, pipeline: Any = None) -> None:
        await p.jobs.set_status(self.connection, self._rq, status, pipeline)

    def _is(self, status: JobStatus, name: str) -> AwaitableProperty[bool]:
        async def check() -> bool:
            return await self.get_status() == status

        return AwaitableProperty(check, f'job.{name}')

    @property
    def is_finished(self) -> AwaitableProperty[bool]:
        return self._is(JobStatus.FINISHED, 'is_finished')

    @property
    def is_queued(self) -> AwaitableProperty[bool]:
        return self._is(JobStatus.QUEUED, 'is_queued')

    @property
    def is_failed(self) -> AwaitableProperty[bool]:
        return self._is(JobStatus.FAILED, 'is_failed')

    @property
    def is_started(self) -> AwaitableProperty[bool]:
        return self._is(JobStatus.STARTED, 'is_started')

    @property
    def is_deferred(self) -> AwaitableProperty[bool]:
        return self._is(JobStatus.DEFERRED, 'is_deferred')

    @property
    def is_canceled(self) -> AwaitableProperty[bool]:
        return self._is(JobStatus.CANCELED, 'is_canceled')

    @property
    def is_scheduled(self) -> AwaitableProperty[bool]:
        return self._is(JobStatus.SCHEDULED, 'is_scheduled')

    @property
    def is_stopped(self) -> AwaitableProperty[bool]:
        return self._is(JobStatus.STOPPED, 'is_stopped')

    @property
    def is_ready_to_enqueue(self) -> AwaitableProperty[bool]:
        return self._is(JobStatus.READY_TO_ENQUEUE, 'is_ready_to_enqueue')

    # -- results ---------------------------------------------------------------------------

    async def latest_result(self, timeout: float = 0) -> Result[R_co] | None:
        """The newest Result; with ``timeout`` (seconds, rounded to ms) wait for one to exist."""
        return await Result.fetch_latest(self, serializer=self.serializer, timeout=timeout)

    async def results(self) -> list[Result[R_co]]:
        """All Results, newest first."""
        return await Result.all(self, serializer=self.serializer)

    async def result_count(self) -> int:
        """How many Results the job has (rq's ``Result.count(job)``)."""
        return await Result.count(self)

    async def delete_results(self) -> None:
        """Delete every Result of the job (rq's ``Result.delete_all(job)``)."""
        await Result.delete_all(self)

    async def return_value(self, refresh: bool = False) -> R_co | None:
        """The latest successful return value, or ``None`` (cached on the object, as in rq)."""
        if refresh:
            self._cached_result = None
        if not self._cached_result:
            self._cached_result = await self.latest_result()
        if self._cached_result and self._cached_result.type == Result.Type.SUCCESSFUL:
            return self._cached_result.return_value
        return None

    @property
    def result(self) -> AwaitableProperty[R_co | None]:
        """``await job.result``: the latest result's value if it succeeded, else ``None``."""

        async def read() -> R_co | None:
            latest = await self.latest_result()
            if latest is not None and latest.type == Result.Type.SUCCESSFUL:
                return latest.return_value
            return None

        return AwaitableProperty(read, 'job.result')

    @property
    def exc_info(self) -> AwaitableProperty[str | None]:
        """``await job.exc_info``: the latest result's traceback if it failed, else the hash's
        legacy ``exc_info``. Deprecated in rq 3.0 (as there) for ``latest_result()``."""

        async def read() -> str | None:
            warnings.warn('job.exc_info is deprecated, use job.latest_result() instead.', DeprecationWarning, 2)
            if not self._cached_result:
                self._cached_result = await self.latest_result()
            if self._cached_result and self._cached_result.type == Result.Type.FAILED:
                return self._cached_result.exc_string
            return self._rq._exc_info

        return AwaitableProperty(read, 'job.exc_info')

    async def wait(self, timeout: float | None = None) -> R_co:
        """The job's return value once it has run, waiting for it on the result stream.

        Raises :class:`~aiorq.JobFailed` if it failed (:class:`~aiorq.JobStopped`,
        :class:`~aiorq.JobCanceled` if stopped or canceled), ``asyncio.TimeoutError`` after
        ``timeout`` seconds (None: no limit), ``NoSuchJobError`` if the job is gone (deleted, or
        ``result_ttl=0``, which keeps nothing). A retried or repeated job is waited for through
        its last attempt. A connection is taken from the pool only while reading or blocking.
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        conn = self.connection
        while True:
            # The decision is made from status and newest result read together; the blocking
            # read below only wakes this loop when a worker appends a result.
            status, latest = await p.jobs.status_and_latest_result(conn, self.id, self.serializer)
            if status is None:
                raise NoSuchJobError(f'job {self.id} does not exist (deleted, expired, or result_ttl=0)')
            if status == JobStatus.CANCELED:
                raise JobCanceled(self.id)
            if status in _DONE:
                return self._outcome(status, None if latest is None else Result._adopt(latest, conn))
            wait = WAIT_RECHECK_INTERVAL
            if deadline is not None:
                wait = min(wait, deadline - loop.time())
                if wait <= 0:
                    raise asyncio.TimeoutError(f'job {self.id} is still {status.value} after {timeout} s')
            await p.jobs.wait_for_result_after(conn, self.id, (latest and latest.id) or '0-0', wait)

    def _outcome(self, status: JobStatus, latest: Result[Any] | None) -> Any:
        """What ``wait`` returns or raises for a job in a final status, given its newest result."""
        failure = latest if latest is not None and latest.type in _FAILURES else None
        if status == JobStatus.STOPPED:
            raise JobStopped(self.id, failure)
        if status == JobStatus.FAILED:
            raise JobFailed(self.id, failure)
        if latest is None or latest.type != Result.Type.SUCCESSFUL:
            raise NoSuchJobError(f'job {self.id} finished but its result is gone (expired or deleted)')
        return latest.return_value

    # -- dependencies ----------------------------------------------------------------------

    @property
    def dependency(self) -> AwaitableProperty[Job[Any] | None]:
        async def read() -> Job[Any] | None:
            if not self._dependency_ids:
                return None
            return await Job.fetch(self._dependency_ids[0], self.connection, self.serializer)

        return AwaitableProperty(read, 'job.dependency')

    @property
    def dependent_ids(self) -> AwaitableProperty[list[str]]:
        return AwaitableProperty(lambda: p.jobs.dependent_ids(self.connection, self.id), 'job.dependent_ids')

    @property
    def dependency_ids(self) -> AwaitableProperty[list[str]]:
        return AwaitableProperty(lambda: p.jobs.dependency_ids(self.connection, self.id), 'job.dependency_ids')

    async def fetch_dependencies(self) -> list[Job[Any]]:
        found = await Job.fetch_many(self._dependency_ids, self.connection, self.serializer)
        return [j for j in found if j is not None]

    async def dependencies_are_met(self, parent_job: Job[Any] | None = None, exclude_job_id: str | None = None) -> bool:
        return await p.enqueue.dependencies_are_met(
            self.connection, self._rq, parent=parent_job._rq if parent_job else None, exclude_job_id=exclude_job_id
        )

    # -- management ------------------------------------------------------------------------

    async def get_position(self) -> int | None:
        return await p.jobs.position(self.connection, self.origin, self.id)

    async def get_executions(self) -> list[Execution]:
        return await p.jobs.get_executions(self.connection, self.id)

    async def cancel(
        self, pipeline: Any = None, enqueue_dependents: bool = False, remove_from_dependencies: bool = False
    ) -> dict[str, list[str]]:
        return await p.jobs.cancel(
            self.connection,
            self._rq,
            pipeline=pipeline,
            enqueue_dependents=enqueue_dependents,
            remove_from_dependencies=remove_from_dependencies,
        )

    async def delete(
        self, pipeline: Any = None, remove_from_queue: bool = True, delete_dependents: bool = False
    ) -> None:
        await p.jobs.delete(
            self.connection,
            self._rq,
            pipeline=pipeline,
            remove_from_queue=remove_from_queue,
            delete_dependents=delete_dependents,
        )

    async def delete_dependents(self) -> None:
        await p.jobs.delete_dependents(self.connection, self.id, self.serializer)

    async def requeue(self, at_front: bool = False) -> Job[R_co]:
        """Move the job from the failed registry back onto its queue."""
        await p.jobs.requeue(self.connection, self._rq, p.keys.registry('failed', self.origin), at_front=at_front)
        return self

    # -- registries (no I/O to build them) -----------------------------------------------

    def _registry(self, cls: Any) -> Any:
        return cls(self.origin, connection=self._connection, job_class=self.__class__, serializer=self.serializer)

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
    def execution_registry(self) -> ExecutionRegistry:
        return ExecutionRegistry(self.id, connection=self._connection)

    def queue(self) -> Queue:
        from .queue import Queue

        return Queue(self.origin, connection=self.connection, serializer=self.serializer)


def checked_job_class(job_class: Any) -> type[Job]:
    """``job_class`` if it is an ``aiorq.Job`` subclass (``Job`` when ``None``); an rq job class
    would block the event loop on Redis, so it is refused with ``TypeError``."""
    if job_class is None:
        return Job
    if not (isinstance(job_class, type) and issubclass(job_class, Job)):
        raise TypeError(
            f'job_class={job_class!r} is not an aiorq.Job subclass: rq.job.Job does blocking Redis I/O; '
            'subclass aiorq.Job instead'
        )
    return job_class


class Dependency(rq.job.Dependency):
    """rq's ``Dependency`` (so stock rq accepts it too), also taking ``aiorq.Job`` objects."""

    def __init__(self, jobs: Any, allow_failure: bool = False, enqueue_at_front: bool = False) -> None:
        if isinstance(jobs, Job):
            jobs = [jobs]
        if isinstance(jobs, (list, tuple)):
            jobs = [j.id if isinstance(j, Job) else j for j in jobs]
        super().__init__(jobs, allow_failure=allow_failure, enqueue_at_front=enqueue_at_front)


def _unwrap_dependencies(depends_on: Any) -> Any:
    """Turn aiorq jobs (also inside lists and ``Dependency``) into what rq's codec accepts."""
    from rq.job import Dependency

    if isinstance(depends_on, Job):
        return depends_on._rq
    if isinstance(depends_on, Dependency):
        return Dependency(
            [_unwrap_dependencies(d) for d in depends_on.dependencies],
            allow_failure=depends_on.allow_failure,
            enqueue_at_front=depends_on.enqueue_at_front,
        )
    if isinstance(depends_on, (list, tuple)):
        return [_unwrap_dependencies(d) for d in depends_on]
    return depends_on
