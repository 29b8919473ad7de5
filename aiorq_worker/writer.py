"""The outcome writer: each end of an execution written through the protocol layer, kept until
Redis takes it (rq's capped exponential backoff), and never written twice."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq.job import Job as RQJob
from rq.job import Retry

from aiorq.protocol import finish, jobs, outcomes
from aiorq.protocol.batch import Combiner, SectionError
from aiorq.protocol.outcomes import ResultTooLargeError

from .backoff import Backoff
from .execution import Execution

logger = logging.getLogger('aiorq.worker')

# Error replies that pass on their own (memory freed, load or failover done): outcomes retry them.
PASSING_ERRORS = ('OOM', 'LOADING', 'BUSY', 'TRYAGAIN', 'MASTERDOWN', 'READONLY', 'NOREPLICAS')
STOPPED_EXC = 'Job stopped by user, work-horse terminated.'

__all__ = ['OutcomeRefusedError', 'OutcomeWriter', 'ResultTooLargeError']


class OutcomeRefusedError(Exception):
    """Redis refused an outcome for a reason that does not pass with time (wrong type, too large)."""


class OutcomeWriter:
    """Writes the outcomes of one worker's executions (``worker_name``'s counters and records)."""

    def __init__(self, connection: Redis, worker_name: str, default_result_ttl: int, serializer: Any) -> None:
        self.connection = connection
        self.worker_name = worker_name
        self.default_result_ttl = default_result_ttl
        self.serializer = serializer
        # Success transactions finishing at the same moment share one script call.
        self.combiner = Combiner(connection)
        # The largest encoded result Redis accepts (its proto-max-bulk-len, asked when needed).
        self.result_limit = outcomes.ResultLimit()

    async def success(self, ex: Execution, return_value: Any) -> bool:
        """§4.9; ``True`` once committed, ``False`` when superseded. Raises
        :class:`ResultTooLargeError` or :class:`OutcomeRefusedError` when the result cannot be stored."""
        while True:
            try:
                return bool(
                    await self.durably(
                        lambda first: finish.finish_success(
                            self.connection,
                            self.worker_name,
                            ex,
                            return_value,
                            self.default_result_ttl,
                            self.serializer,
                            run=self.combiner.submit if first else None,
                            max_result_size=self.result_limit.size,
                        )
                    )
                )
            except ResultTooLargeError:
                if not await self.result_limit.learn(self.connection):
                    raise

    async def failure(self, ex: Execution, exc_string: str, record: bool) -> bool:
        """§4.10 (a retry when the job has retries left); ``record=False``: no failure records."""
        return await self.recorded(
            ex,
            lambda _: finish.finish_failure(self.connection, self.worker_name, None, ex, exc_string, record=record),
        )

    async def stopped(self, ex: Execution) -> bool:
        """§4.14: status ``stopped``, no retry."""
        return await self.recorded(
            ex,
            lambda _: finish.finish_failure(self.connection, self.worker_name, None, ex, STOPPED_EXC, stopped=True),
        )

    async def abandoned(self, ex: Execution) -> bool:
        """A cold shutdown ended the job: recorded as rq records an abnormal horse exit."""
        exc = f'Work-horse terminated unexpectedly; cold shutdown of worker {self.worker_name}; '
        return await self.recorded(
            ex, lambda _: finish.finish_failure(self.connection, self.worker_name, None, ex, exc)
        )

    async def returned_retry(self, ex: Execution, retry: Retry) -> bool:
        """§4.12, a returned ``Retry``; ``True`` once committed."""

        async def write(_: bool) -> bool:
            committed, _exhausted = await finish.finish_returned_retry(self.connection, self.worker_name, ex, retry)
            return committed

        return await self.recorded(ex, write)

    async def unstartable(self, queue_name: str, job_id: str, exec_id: str, error: Exception) -> None:
        """A claimed job whose hash cannot be read: failed without rq's codec, so its id is not lost."""
        logger.error('%s: job %s cannot be read (%s); recorded as failed', queue_name, job_id, error)
        await finish.fail_unstarted(
            self.connection, self.worker_name, queue_name, job_id, exec_id, f'Job {job_id} could not be read: {error!r}'
        )

    async def stuck(self, queue_name: str, job_id: str) -> None:
        """An id stuck in the intermediate list: failed as rq's maintenance fails it."""
        try:
            job: RQJob = await jobs.fetch(self.connection, job_id, self.serializer)
        except Exception:
            return
        await finish.finish_failure(
            self.connection, self.worker_name, job, None, 'Job was stuck in intermediate queue.'
        )

    async def recorded(self, ex: Execution, write: Callable[[bool], Awaitable[Any]]) -> bool:
        """:meth:`durably`, for outcomes that have no fallback: a refusal is logged (the job's
        records stay, for maintenance to recover once its heartbeats stop)."""
        try:
            return bool(await self.durably(write))
        except OutcomeRefusedError as e:
            logger.error('Worker %s: Redis refused the outcome of job %s (%s)', self.worker_name, ex.job_id, e)
            return False

    async def durably(self, write: Callable[[bool], Awaitable[Any]]) -> Any:
        """Keep an outcome until Redis takes it: retry with rq's capped exponential backoff.

        ``write(first)`` builds and sends the outcome; ``first`` is False on a retry, which then
        goes out on its own rather than combined with other jobs' outcomes, so one job's outcome
        can never hold another's back. Retrying is safe: builders write the same values each
        time, and an attempt whose reply was lost is recognised as committed (see
        ``protocol.finish._guard``). Only errors that can pass are retried (a lost connection,
        out of memory, a server loading or read-only during a failover); any other refusal
        raises :class:`OutcomeRefusedError` at once. A command that failed after others of the same
        outcome ran cannot be undone, and is reported, not repeated.
        """
        backoff: Backoff | None = None  # made at the first failure: most outcomes go through at once
        first = True
        while True:
            try:
                return await write(first)
            except SectionError as e:
                if e.partial:
                    logger.error(
                        'Worker %s: an outcome was only partly recorded (%s at its command %d); not retried',
                        self.worker_name,
                        e,
                        e.command,
                    )
                    return False
                if not str(e).startswith(PASSING_ERRORS):
                    raise OutcomeRefusedError(str(e)) from e
                backoff = backoff or Backoff()
                wait = backoff.next()
                logger.error('Worker %s: Redis refused an outcome (%s); retrying in %.0fs', self.worker_name, e, wait)
            except (RedisConnectionError, RedisTimeoutError, OutOfMemoryError, OSError) as e:
                backoff = backoff or Backoff()
                wait = backoff.next()
                logger.error(
                    'Worker %s: could not record an outcome (%s); retrying in %.0fs', self.worker_name, e, wait
                )
            except ResponseError as e:
                if not first:
                    raise OutcomeRefusedError(str(e)) from e
                # Refused as a whole: maybe for another job's section; this one is tried alone.
                logger.error('Worker %s: Redis refused a combined outcome write (%s)', self.worker_name, e)
                first = False
                continue
            first = False
            await asyncio.sleep(wait)
