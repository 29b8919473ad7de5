"""aiorq: RQ's jobs, queues and registries from asyncio, on RQ's own Redis data.

Importing this package is cheap and needs no event loop: stock rq workers import user modules
that use ``@aiorq.job``.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis
from rq.callbacks import Callback
from rq.job import JobStatus, Retry
from rq.queue import EnqueueData
from rq.rate_limit import RateLimit
from rq.repeat import Repeat
from rq.webhook import Webhook

from .connections import (
    NoRedisConnectionException,
    from_url,
    get_current_connection,
    pop_connection,
    push_connection,
)
from .current import get_current_job
from .group import Group
from .job import Dependency, Job
from .queue import Queue
from .registry import (
    CanceledJobRegistry,
    DeferredJobRegistry,
    ExecutionRegistry,
    FailedJobRegistry,
    FinishedJobRegistry,
    ReadyJobRegistry,
    ScheduledJobRegistry,
    StartedJobRegistry,
    clean_registries,
)
from .results import JobCanceled, JobFailed, JobStopped, Result
from .version import VERSION
from .workers import (
    Worker,
    WorkerInfo,
    count_workers,
    get_workers,
    is_suspended,
    resume,
    send_command,
    send_kill_horse_command,
    send_shutdown_command,
    send_stop_execution_command,
    send_stop_job_command,
    suspend,
)

# isort: split
# Last: ``from .job import`` also binds the submodule ``aiorq/job.py`` as ``aiorq.job`` (at run
# time if it is first loaded there, and always to type checkers), and the decorator must win.
from .decorators import AsyncTask, EnqueueOptions, Task, TaskOptions, job

__version__ = VERSION

__all__ = [
    'VERSION',
    'AsyncTask',
    'Callback',
    'CanceledJobRegistry',
    'DeferredJobRegistry',
    'Dependency',
    'EnqueueOptions',
    'EnqueueData',
    'ExecutionRegistry',
    'FailedJobRegistry',
    'FinishedJobRegistry',
    'Group',
    'Job',
    'JobCanceled',
    'JobFailed',
    'JobStatus',
    'JobStopped',
    'NoRedisConnectionException',
    'Queue',
    'RateLimit',
    'ReadyJobRegistry',
    'Repeat',
    'Result',
    'Retry',
    'ScheduledJobRegistry',
    'StartedJobRegistry',
    'Task',
    'TaskOptions',
    'Webhook',
    'Worker',
    'WorkerInfo',
    'cancel_job',
    'clean_registries',
    'count_workers',
    'from_url',
    'get_current_connection',
    'get_current_job',
    'get_workers',
    'is_suspended',
    'job',
    'pop_connection',
    'push_connection',
    'requeue_job',
    'resume',
    'send_command',
    'send_kill_horse_command',
    'send_shutdown_command',
    'send_stop_execution_command',
    'send_stop_job_command',
    'suspend',
]


async def cancel_job(
    job_id: str, connection: Redis | None = None, serializer: Any = None, enqueue_dependents: bool = False
) -> dict[str, list[str]]:
    """``rq.cancel_job``: fetch and cancel."""
    job = await Job.fetch(job_id, connection=connection, serializer=serializer)
    return await job.cancel(enqueue_dependents=enqueue_dependents)


async def requeue_job(job_id: str, connection: Redis | None = None, serializer: Any = None) -> Job[Any]:
    """``rq.requeue_job``: move a failed job back onto its queue."""
    job = await Job.fetch(job_id, connection=connection, serializer=serializer)
    return await job.requeue()
