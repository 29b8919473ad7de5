"""The ``@job`` decorator (rq 3.0's parameters; ``delay``/``enqueue`` are awaitable)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import wraps
from typing import TYPE_CHECKING, Any, TypeVar

from redis.asyncio import Redis

if TYPE_CHECKING:
    from .job import Job
    from .queue import Queue

F = TypeVar('F', bound=Callable[..., Any])


class job:  # noqa: N801 - rq's spelling
    """``@job('my_queue')`` attaches ``f.delay(...)`` and ``f.enqueue(...)`` to ``f`` and returns
    ``f`` itself, so its import path (``func_name``) stays the one stock workers import."""

    def __init__(
        self,
        queue: Queue | str,
        connection: Redis | None = None,
        timeout: int | None = None,
        result_ttl: int | None = None,
        ttl: int | None = None,
        queue_class: type[Queue] | None = None,
        depends_on: Any = None,
        at_front: bool = False,
        meta: dict[Any, Any] | None = None,
        description: str | None = None,
        failure_ttl: int | None = None,
        retry: Any = None,
        on_failure: Any = None,
        on_success: Any = None,
        on_stopped: Any = None,
        webhooks: Sequence[Any] | None = None,
    ) -> None:
        self.queue = queue
        self.queue_class = queue_class
        self.connection = connection
        self.timeout = timeout
        self.result_ttl = result_ttl
        self.ttl = ttl
        self.meta = meta
        self.depends_on = depends_on
        self.at_front = at_front
        self.description = description
        self.failure_ttl = failure_ttl
        self.retry = retry
        self.on_success = on_success
        self.on_failure = on_failure
        self.on_stopped = on_stopped
        self.webhooks = webhooks

    def __call__(self, f: F) -> F:
        @wraps(f)
        async def delay(*args: Any, **kwargs: Any) -> Job:
            from .queue import Queue

            if isinstance(self.queue, str):
                # The connection is resolved now, at call time (the current one if none was given).
                queue = (self.queue_class or Queue)(name=self.queue, connection=self.connection)
            else:
                queue = self.queue
            depends_on = kwargs.pop('depends_on', None) or self.depends_on
            job_id = kwargs.pop('job_id', None)
            at_front = kwargs.pop('at_front', None)
            if at_front is None:
                at_front = self.at_front
            return await queue.enqueue_call(
                f,
                args=args,
                kwargs=kwargs,
                timeout=self.timeout,
                result_ttl=self.result_ttl,
                ttl=self.ttl,
                depends_on=depends_on,
                job_id=job_id,
                at_front=at_front,
                meta=self.meta,
                description=self.description,
                failure_ttl=self.failure_ttl,
                retry=self.retry,
                on_failure=self.on_failure,
                on_success=self.on_success,
                on_stopped=self.on_stopped,
                webhooks=self.webhooks,
            )

        f.delay = delay  # type: ignore[attr-defined]
        f.enqueue = delay  # type: ignore[attr-defined]
        return f
