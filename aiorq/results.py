"""``aiorq.Result``: rq 3.0's ``Result`` (``rq:results:<job id>``, rq-protocol §5), its reads awaited."""

from __future__ import annotations

import re
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, NoReturn, TypeVar

import redis
from redis.asyncio import Redis
from rq.results import Result as RQResult

from . import protocol as p

if TYPE_CHECKING:
    from .job import Job

__all__ = ['JobCanceled', 'JobFailed', 'JobStopped', 'Result']

R_co = TypeVar('R_co', covariant=True)
T = TypeVar('T')

WRITES_REFUSED = (
    'aiorq.Result does not write results: the worker that runs a job (aiorq worker or rq worker) '
    'appends them to rq:results:<job id>. Read them with await Result.fetch_latest(job) / Result.all(job).'
)


def _connection(job: Job) -> Redis:
    """The job's async client; an ``rq.job.Job`` on a blocking client is refused, not blocked on."""
    connection = job.connection
    if isinstance(connection, redis.Redis):
        raise TypeError(
            f'aiorq.Result needs an aiorq.Job (redis.asyncio client), got {job!r} on a blocking client: '
            'use rq.results.Result for it, or aiorq.Job.fetch(job_id, connection=<redis.asyncio.Redis>)'
        )
    return connection


class Result(RQResult, Generic[R_co]):
    """One outcome of one execution, as rq 3.0 stores it; ``Result[R]`` for a job of ``Job[R]``.

    Fields, ``Result.Type`` (rq's own enum), equality by entry id, truth and ``repr`` are rq's;
    the class methods that read Redis are coroutines. Writing is refused (see ``WRITES_REFUSED``).
    """

    # Typed here only: what the job's function returned (None unless ``type`` is SUCCESSFUL).
    return_value: R_co | None

    def __init__(
        self,
        job_id: str,
        type: RQResult.Type,
        connection: Redis | None = None,
        id: str | None = None,
        created_at: datetime | None = None,
        return_value: Any | None = None,
        exc_string: str | None = None,
        worker_name: str = '',
        serializer: Any = None,
        execution_id: str | None = None,
        execution_started_at: datetime | None = None,
        execution_ended_at: datetime | None = None,
    ) -> None:
        # rq types ``connection`` as a blocking client; here it is the job's async one (or NOIO).
        conn: Any = connection if connection is not None else p.codec.NOIO
        super().__init__(
            job_id,
            type,
            connection=conn,
            id=id,
            created_at=created_at,
            return_value=return_value,
            exc_string=exc_string,
            worker_name=worker_name,
            serializer=serializer,
            execution_id=execution_id,
            execution_started_at=execution_started_at,
            execution_ended_at=execution_ended_at,
        )

    @classmethod
    def _adopt(cls, decoded: RQResult, connection: Any) -> Result[Any]:
        """The same fields on this class (rq's ``restore`` always builds an ``rq.results.Result``)."""
        result = cls.__new__(cls)
        result.__dict__.update(decoded.__dict__)
        result.connection = connection
        return result

    @classmethod
    def restore(
        cls, job_id: str, result_id: str, payload: dict[Any, Any], connection: Any, serializer: Any = None
    ) -> Result[Any]:
        """Decode one stream entry (no I/O), exactly as ``rq.results.Result.restore``."""
        return cls._adopt(RQResult.restore(job_id, result_id, payload, connection, serializer), connection)

    @classmethod
    def get_key(cls, job_id: str) -> str:
        return p.keys.results(job_id)

    # The readers differ from rq's only by being coroutines (hence the ignored overrides).

    @classmethod
    async def fetch_latest(  # type: ignore[override]
        cls, job: Job[T], serializer: Any = None, timeout: float = 0
    ) -> Result[T] | None:
        """The newest result; with ``timeout`` (seconds, rounded to ms) wait for one while none exists.

        Like rq, ``serializer`` is this argument's, not the job's (``job.latest_result()`` passes the job's).
        """
        conn = _connection(job)
        found = await p.jobs.latest_result(conn, job.id, serializer, timeout)
        return None if found is None else cls._adopt(found, conn)

    @classmethod
    async def fetch(cls, job: Job[T], serializer: Any = None) -> Result[T] | None:  # type: ignore[override]
        """rq 3.0's ``Result.fetch`` is a stub that always returns ``None``; so is this."""
        return None

    @classmethod
    async def all(cls, job: Job[T], serializer: Any = None) -> list[Result[T]]:  # type: ignore[override]
        """Every result of the job, newest first (rq keeps about the last 10)."""
        conn = _connection(job)
        return [cls._adopt(r, conn) for r in await p.jobs.all_results(conn, job.id, serializer)]

    @classmethod
    async def count(cls, job: Job) -> int:  # type: ignore[override]
        return await p.jobs.result_count(_connection(job), job.id)

    @classmethod
    async def delete_all(cls, job: Job) -> None:  # type: ignore[override]
        await p.jobs.delete_results(_connection(job), job.id)

    # Results are the worker's writes: refuse rather than block on rq's synchronous code.

    def save(self, ttl: int | None, pipeline: Any = None) -> NoReturn:
        raise NotImplementedError(WRITES_REFUSED)

    @classmethod
    def create(cls, *args: Any, **kwargs: Any) -> NoReturn:
        raise NotImplementedError(WRITES_REFUSED)

    @classmethod
    def create_failure(cls, *args: Any, **kwargs: Any) -> NoReturn:
        raise NotImplementedError(WRITES_REFUSED)

    @classmethod
    def create_retried(cls, *args: Any, **kwargs: Any) -> NoReturn:
        raise NotImplementedError(WRITES_REFUSED)

    @classmethod
    def create_max_retries_exceeded(cls, *args: Any, **kwargs: Any) -> NoReturn:
        raise NotImplementedError(WRITES_REFUSED)


_EXC_TYPE = re.compile(r'[A-Za-z_][\w.]*')


def _last_exception(exc_string: str) -> tuple[str | None, str]:
    """The type and message of a formatted traceback's last exception (``('ValueError', 'bad')``);
    ``(None, text)`` for a failure that is no traceback (a stopped or abandoned job's note)."""
    text = exc_string.strip('\n')
    if 'Traceback (most recent call last):' not in text:
        return None, text.strip()
    lines = text.splitlines()
    # The last exception's own lines follow the last indented line (a frame or its source).
    start = max((i + 1 for i, line in enumerate(lines) if line[:1] in (' ', '\t')), default=0)
    head, *rest = lines[start:] or ['']
    name, sep, message = head.partition(': ')
    if not _EXC_TYPE.fullmatch(name):
        return None, '\n'.join(lines[start:])
    return name, '\n'.join([message, *rest]) if sep else '\n'.join(rest)


class JobFailed(Exception):  # noqa: N818 - the name the issue fixes
    """Raised by ``job.wait()`` when the job failed. The exception stayed in the worker: rq stores
    its text only, so this carries ``exc_type`` (its class name as the traceback spells it, e.g.
    ``'ValueError'``; None when the failure is no exception), ``exc_message`` and ``traceback``
    (the worker's whole ``exc_string``), with ``job_id`` and the failed ``result``."""

    def __init__(self, job_id: str, result: Result[Any] | None, what: str = 'failed') -> None:
        self.job_id = job_id
        self.result = result
        self.traceback: str = (result.exc_string if result is not None else None) or ''
        self.exc_type, self.exc_message = _last_exception(self.traceback)
        cause = f'{self.exc_type}: {self.exc_message}' if self.exc_type else self.exc_message
        super().__init__(f'job {job_id} {what}' + (f': {cause}' if cause else ''))


class JobStopped(JobFailed):
    """Raised by ``job.wait()`` when the job was stopped (``send_stop_job_command``): status
    ``stopped``, its result a failure whose message says so."""

    def __init__(self, job_id: str, result: Result[Any] | None) -> None:
        super().__init__(job_id, result, 'was stopped')


class JobCanceled(JobFailed):
    """Raised by ``job.wait()`` when the job was canceled (``job.cancel()``); it has no result."""

    def __init__(self, job_id: str) -> None:
        super().__init__(job_id, None, 'was canceled')
