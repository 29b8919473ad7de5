"""The ``@job`` decorator: rq 3.0's parameters, and a ``delay`` typed with the function's own signature.

``@job(queue)`` returns the decorated function itself (so its import path, the ``func_name``
workers import, stays its own, and stock rq can enqueue it too) with ``delay``, ``enqueue`` and
``options`` attached; to a type checker it is a :class:`Task` or an :class:`AsyncTask`.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping, Sequence
from datetime import datetime, timedelta
from functools import wraps
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Generic, NoReturn, ParamSpec, Protocol, TypedDict, TypeVar, cast, overload

from redis.asyncio import Redis
from rq.queue import EnqueueArgs
from rq.utils import now

if TYPE_CHECKING:
    from redis.asyncio.client import Pipeline
    from rq.callbacks import Callback
    from rq.job import Dependency, Retry
    from rq.rate_limit import RateLimit
    from rq.repeat import Repeat
    from rq.webhook import Webhook
    from typing_extensions import Unpack

    from .job import Job
    from .queue import Queue

__all__ = ['AsyncTask', 'EnqueueOptions', 'Task', 'TaskOptions', 'job']

P = ParamSpec('P')
R = TypeVar('R')
R_co = TypeVar('R_co', covariant=True)


# rq's EnqueueArgs fields other than the call itself, each read from the options by its enqueue
# keyword (rq names the timeout ``job_timeout`` there).
_OPTION_OF = {
    field: 'job_timeout' if field == 'timeout' else field
    for field in EnqueueArgs._fields
    if field not in ('func', 'args', 'kwargs')
}


class EnqueueOptions(TypedDict, total=False):
    """rq's enqueue options (the keywords ``rq.Queue.enqueue`` takes out of its ``kwargs``), typed,
    plus ``enqueue_at``/``enqueue_in`` to schedule as ``Queue.enqueue_at``/``enqueue_in`` do.
    ``None`` leaves an option to rq's default."""

    job_timeout: int | str | None
    result_ttl: int | None
    ttl: int | None
    failure_ttl: int | None
    description: str | None
    depends_on: Job[Any] | Dependency | str | Sequence[Job[Any] | Dependency | str] | None
    job_id: str | None
    at_front: bool
    meta: dict[str, Any] | None
    retry: Retry | None
    repeat: Repeat | None
    on_success: Callback | Callable[..., Any] | None
    on_failure: Callback | Callable[..., Any] | None
    on_stopped: Callback | Callable[..., Any] | None
    rate_limit: RateLimit | None
    unique: bool
    webhooks: Sequence[Webhook] | None
    pipeline: Pipeline | None
    enqueue_at: datetime | None
    enqueue_in: timedelta | None


_OPTION_NAMES = frozenset(EnqueueOptions.__optional_keys__)


class TaskOptions(Generic[P, R_co]):
    """``task.options(...)``: rq's enqueue options bound to a task. Immutable, so one can be kept
    and reused; ``.delay(*args, **kwargs)`` enqueues (the function's arguments are passed as they
    are, none is taken for an option) and ``.options(...)`` derives another."""

    __slots__ = ('_decorator', '_func', '_options')
    _decorator: job
    _func: Callable[..., Any]
    _options: Mapping[str, Any]

    def __init__(self, decorator: job, func: Callable[..., Any], options: Mapping[str, Any]) -> None:
        unknown = set(options) - _OPTION_NAMES
        if unknown:
            raise TypeError(f'unknown enqueue option(s): {", ".join(sorted(unknown))}')
        if options.get('enqueue_at') is not None and options.get('enqueue_in') is not None:
            raise TypeError('give enqueue_at or enqueue_in, not both')
        object.__setattr__(self, '_decorator', decorator)
        object.__setattr__(self, '_func', func)
        object.__setattr__(self, '_options', MappingProxyType(dict(options)))

    def __setattr__(self, name: str, value: Any) -> NoReturn:
        raise AttributeError(f'{type(self).__name__} is immutable: derive another with .options(...)')

    def __repr__(self) -> str:
        given = ', '.join(f'{k}={v!r}' for k, v in self._options.items())
        return f'<TaskOptions {self._func.__module__}.{self._func.__qualname__}({given})>'

    def options(self, **options: Unpack[EnqueueOptions]) -> TaskOptions[P, R_co]:
        """These options with ``options`` replacing or adding to them."""
        return TaskOptions(self._decorator, self._func, {**self._options, **options})

    async def delay(self, *args: P.args, **kwargs: P.kwargs) -> Job[R_co]:
        """Enqueue ``func(*args, **kwargs)`` with these options; returns the job."""
        return await self._enqueue(args, kwargs, {})

    async def _enqueue(self, args: Sequence[Any], kwargs: dict[str, Any], overrides: Mapping[str, Any]) -> Job[Any]:
        d = self._decorator
        # The decorator's arguments, then these options, then the call's own (rq's ``delay``).
        o: dict[str, Any] = {**d._defaults(), **self._options, **overrides}
        values: dict[str, Any] = {field: o.get(name) for field, name in _OPTION_OF.items()}
        values.update(at_front=bool(values['at_front']), unique=bool(values['unique']))
        ea = EnqueueArgs(func=self._func, args=tuple(args), kwargs=kwargs, **values)
        queue = d._queue()
        when: datetime | None = o.get('enqueue_at')
        if o.get('enqueue_in') is not None:
            when = now() + o['enqueue_in']
        if when is not None:
            return await queue._schedule_parsed(when, ea)
        return await queue._enqueue_parsed(ea)


class TaskBase(Protocol[P, R_co]):
    """What ``@job`` adds to a function, typed with its parameters ``P`` and result ``R``."""

    __name__: str
    __qualname__: str

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, Job[R_co]]:
        """Enqueue ``f(*args, **kwargs)`` with the decorator's options (``await f.delay(...)``).
        As with rq, ``depends_on``, ``job_id`` and ``at_front`` keywords are taken as options
        (untyped); ``f.options(...)`` is the typed way to give any option."""
        ...

    def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, Job[R_co]]:
        """rq's other name for :meth:`delay`."""
        ...

    def options(self, **options: Unpack[EnqueueOptions]) -> TaskOptions[P, R_co]:
        """rq's enqueue options for the next ``.delay`` (they override the decorator's)."""
        ...


class Task(TaskBase[P, R_co], Protocol[P, R_co]):
    """A plain function ``def f(*P) -> R`` decorated with ``@job``: callable as before, its
    ``delay`` returns ``Job[R]``."""

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R_co: ...


class AsyncTask(TaskBase[P, R_co], Protocol[P, R_co]):
    """A coroutine function ``async def f(*P) -> R`` decorated with ``@job``: callable (and
    awaitable) as before, its ``delay`` returns ``Job[R]``."""

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R_co]: ...


class job:  # noqa: N801 - rq's spelling
    """``@job('my_queue')`` attaches ``f.delay(...)``, ``f.enqueue(...)`` and ``f.options(...)`` to
    ``f`` and returns ``f`` itself, so its import path (``func_name``) stays the one stock workers
    import. The arguments are ``rq.decorators.job``'s."""

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
        retry: Retry | None = None,
        on_failure: Callback | Callable[..., Any] | None = None,
        on_success: Callback | Callable[..., Any] | None = None,
        on_stopped: Callback | Callable[..., Any] | None = None,
        webhooks: Sequence[Webhook] | None = None,
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

    def _defaults(self) -> dict[str, Any]:
        """The decorator's arguments as enqueue options."""
        return {
            'job_timeout': self.timeout,
            'result_ttl': self.result_ttl,
            'ttl': self.ttl,
            'failure_ttl': self.failure_ttl,
            'description': self.description,
            'depends_on': self.depends_on,
            'at_front': self.at_front,
            'meta': self.meta,
            'retry': self.retry,
            'on_success': self.on_success,
            'on_failure': self.on_failure,
            'on_stopped': self.on_stopped,
            'webhooks': self.webhooks,
        }

    def _queue(self) -> Queue:
        from .queue import Queue

        if isinstance(self.queue, str):
            # The connection is resolved now, at call time (the current one if none was given).
            return (self.queue_class or Queue)(name=self.queue, connection=self.connection)
        return self.queue

    @overload
    def __call__(self, f: Callable[P, Coroutine[Any, Any, R]]) -> AsyncTask[P, R]: ...

    @overload
    def __call__(self, f: Callable[P, R]) -> Task[P, R]: ...

    def __call__(self, f: Callable[..., Any]) -> Any:
        base: TaskOptions[..., Any] = TaskOptions(self, f, {})

        @wraps(f)
        async def delay(*args: Any, **kwargs: Any) -> Job[Any]:
            # rq's decorator takes these three out of the function's keywords.
            depends_on = kwargs.pop('depends_on', None) or self.depends_on
            job_id = kwargs.pop('job_id', None)
            at_front = kwargs.pop('at_front', None)
            overrides = {'depends_on': depends_on, 'job_id': job_id}
            if at_front is not None:
                overrides['at_front'] = at_front
            return await base._enqueue(args, kwargs, overrides)

        task = cast(Any, f)
        task.delay = delay
        task.enqueue = delay
        task.options = base.options
        return task
