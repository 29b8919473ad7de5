"""rq's exception-handler chain and its abandoned-job policy, written once for the worker
(failed and abandoned jobs) and for the registries' ``cleanup()`` (abandoned jobs).

The chain is rq's (``rq.job_lifecycle.call_exception_handlers``): each handler in order gets
``(job, exc_type, exc_value, traceback)``, and one that returns an explicit falsy value (not
``None``) stops the chain. Run from asyncio: a coroutine handler is awaited, a blocking one runs
in a thread so that it cannot hold the event loop; a handler that raises is logged and the
chain goes on (one broken handler must not silence the others nor lose the job's outcome).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from rq.exceptions import AbandonedJobError
from rq.job import Job as RQJob

__all__ = ['ExcInfo', 'CallbackRunner', 'abandoned_exc_info', 'call_exception_handlers', 'handle_abandoned']

logger = logging.getLogger('aiorq.handlers')

ExcInfo = tuple[Any, Any, Any]
# Runs one of a job's callbacks: (rq job, callback, timeout, *the callback's own arguments).
CallbackRunner = Callable[..., Awaitable[None]]


async def call_exception_handlers(handlers: Sequence[Callable[..., Any]], job: Any, exc_info: ExcInfo) -> None:
    """rq's chain over ``handlers`` for ``job`` (what each handler receives: an rq or aiorq job)."""
    for handler in handlers:
        try:
            if inspect.iscoroutinefunction(handler):
                keep_going = await handler(job, *exc_info)
            else:
                keep_going = await asyncio.to_thread(handler, job, *exc_info)
                if inspect.isawaitable(keep_going):  # a callable object with an async __call__
                    keep_going = await keep_going
        except Exception:
            logger.exception('Exception handler %r raised', handler)
            continue
        if keep_going is not None and not keep_going:
            break


def abandoned_exc_info() -> ExcInfo:
    """What rq passes for an abandoned job: its work horse died elsewhere, no traceback."""
    return AbandonedJobError, AbandonedJobError(), None


async def handle_abandoned(
    job: RQJob, run_callback: CallbackRunner, on_exception: Callable[[ExcInfo], Awaitable[None]]
) -> None:
    """rq's steps for a job found abandoned, before its failure (or retry) is recorded: its
    failure callback (one that raises is logged, as rq's cleanup does), then ``on_exception``
    (the exception handlers, and whatever the caller adds)."""
    exc_info = abandoned_exc_info()
    try:
        callback = job.failure_callback
        if callback is not None:
            await run_callback(job, callback, job.failure_callback_timeout, *exc_info)
    except Exception:
        logger.exception('Job %s: the failure callback of an abandoned job raised', job.id)
    await on_exception(exc_info)
