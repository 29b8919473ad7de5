"""The worker's options as one frozen value: what every part reads, checked once."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rq.defaults import (
    DEFAULT_JOB_MONITORING_INTERVAL,
    DEFAULT_MAINTENANCE_TASK_INTERVAL,
    DEFAULT_RESULT_TTL,
    DEFAULT_WORKER_TTL,
)
from rq.serializers import resolve_serializer

import aiorq
from aiorq.protocol.defaults import HEARTBEAT_SLACK

DEFAULT_CONCURRENCY = 16
DEQUEUE_STRATEGIES = ('default', 'random', 'round_robin')
SYNC_JOBS = ('thread', 'process')


@dataclass(frozen=True)
class Settings:
    """One worker's options (``Worker``'s constructor arguments, resolved and checked)."""

    name: str
    queue_names: tuple[str, ...]
    concurrency: int = DEFAULT_CONCURRENCY
    default_result_ttl: int = DEFAULT_RESULT_TTL
    worker_ttl: int = DEFAULT_WORKER_TTL
    job_monitoring_interval: int = DEFAULT_JOB_MONITORING_INTERVAL
    maintenance_interval: int = DEFAULT_MAINTENANCE_TASK_INTERVAL
    serializer: Any = None
    exception_handlers: tuple[Callable[..., Any], ...] = ()
    disable_default_exception_handler: bool = False
    log_job_description: bool = True
    dequeue_strategy: str = 'default'
    sync_jobs: str = 'thread'
    job_class: type[aiorq.Job] = aiorq.Job

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError('concurrency must be at least 1')
        if self.dequeue_strategy not in DEQUEUE_STRATEGIES:
            raise ValueError(
                f'Dequeue strategy {self.dequeue_strategy} is not allowed. Use `default`, `random` or `round_robin`.'
            )
        if self.sync_jobs not in SYNC_JOBS:
            raise ValueError("sync_jobs must be 'thread' or 'process'")

    @classmethod
    def build(
        cls,
        queue_names: Sequence[str],
        *,
        name: str | None = None,
        worker_ttl: int | None = None,
        serializer: Any = None,
        exception_handlers: Sequence[Callable[..., Any]] | Callable[..., Any] | None = None,
        job_class: type[aiorq.Job] | None = None,
        **options: Any,
    ) -> Settings:
        """From ``Worker``'s arguments: defaults filled in, one handler made a list of one."""
        if exception_handlers is None:
            exception_handlers = []
        elif callable(exception_handlers):
            exception_handlers = [exception_handlers]
        return cls(
            name=name or uuid.uuid4().hex,
            queue_names=tuple(queue_names) or ('default',),
            worker_ttl=worker_ttl or DEFAULT_WORKER_TTL,
            serializer=resolve_serializer(serializer),
            exception_handlers=tuple(exception_handlers),
            job_class=job_class or aiorq.Job,
            **options,
        )

    @property
    def single(self) -> bool:
        """One queue: pops move ids through its intermediate list, as rq's do."""
        return len(self.queue_names) == 1

    @property
    def idle_ttl(self) -> int:
        """The worker record's TTL while nothing runs."""
        return self.worker_ttl + HEARTBEAT_SLACK

    @property
    def busy_ttl(self) -> int:
        """The worker record's TTL while executions run."""
        return self.job_monitoring_interval + HEARTBEAT_SLACK
