"""``aiorq.Result``: rq 3.0's ``Result`` (``rq:results:<job id>``, rq-protocol §5), its reads awaited."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, NoReturn

import redis
from redis.asyncio import Redis
from rq.results import Result as RQResult

from . import protocol as p

if TYPE_CHECKING:
    from .job import Job

__all__ = ['Result']

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


class Result(RQResult):
    """One outcome of one execution, as rq 3.0 stores it.

    Fields, ``Result.Type`` (rq's own enum), equality by entry id, truth and ``repr`` are rq's;
    the class methods that read Redis are coroutines. Writing is refused (see ``WRITES_REFUSED``).
    """

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
    def _adopt(cls, decoded: RQResult, connection: Any) -> Result:
        """The same fields on this class (rq's ``restore`` always builds an ``rq.results.Result``)."""
        result = cls.__new__(cls)
        result.__dict__.update(decoded.__dict__)
        result.connection = connection
        return result

    @classmethod
    def restore(
        cls, job_id: str, result_id: str, payload: dict[Any, Any], connection: Any, serializer: Any = None
    ) -> Result:
        """Decode one stream entry (no I/O), exactly as ``rq.results.Result.restore``."""
        return cls._adopt(RQResult.restore(job_id, result_id, payload, connection, serializer), connection)

    @classmethod
    def get_key(cls, job_id: str) -> str:
        return p.keys.results(job_id)

    # The readers differ from rq's only by being coroutines (hence the ignored overrides).

    @classmethod
    async def fetch_latest(  # type: ignore[override]
        cls, job: Job, serializer: Any = None, timeout: float = 0
    ) -> Result | None:
        """The newest result; with ``timeout`` (seconds, rounded to ms) wait for one while none exists.

        Like rq, ``serializer`` is this argument's, not the job's (``job.latest_result()`` passes the job's).
        """
        conn = _connection(job)
        found = await p.jobs.latest_result(conn, job.id, serializer, timeout)
        return None if found is None else cls._adopt(found, conn)

    @classmethod
    async def fetch(cls, job: Job, serializer: Any = None) -> Result | None:  # type: ignore[override]
        """rq 3.0's ``Result.fetch`` is a stub that always returns ``None``; so is this."""
        return None

    @classmethod
    async def all(cls, job: Job, serializer: Any = None) -> list[Result]:  # type: ignore[override]
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
