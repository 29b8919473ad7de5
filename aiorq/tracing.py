"""OpenTelemetry tracing: a span per enqueue, and a span per execution that continues it.

Needs only ``opentelemetry-api`` (``pip install aiorq[otel]``); spans are recorded once the
application configures a tracer provider (the SDK, or ``opentelemetry-instrument``). Without the
package every hook is a no-op, and without a provider a hook costs one provider look-up.

The enqueuing span's context travels in the job itself, as W3C trace-context strings in
``job.meta['_otel']``: rq 3.0 stores and restores ``meta`` untouched with the job's serializer,
so the context survives retries, and stock ``rq worker`` processes can continue the trace with
:class:`TracingWorker` (``rq worker -w aiorq.tracing.TracingWorker``) or :class:`TracingSimpleWorker`.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import rq.worker
from rq.job import Job as RQJob
from rq.job import JobStatus

from .version import VERSION

try:
    from opentelemetry import propagate, trace
    from opentelemetry.trace import NoOpTracerProvider, ProxyTracerProvider, SpanKind, Status, StatusCode
except ImportError:  # the extra is not installed: every hook below is a no-op
    ENABLED = False
else:
    ENABLED = True

__all__ = [
    'ENABLED',
    'META_KEY',
    'TracingSimpleWorker',
    'TracingWorker',
    'TracingWorkerMixin',
    'execution_span',
    'inject',
    'record_exception',
    'set_outcome',
    'tracer_configured',
]

META_KEY = '_otel'
F = TypeVar('F')

# Span attributes (OpenTelemetry's messaging conventions, plus rq's own names).
SYSTEM = 'messaging.system'
DESTINATION = 'messaging.destination.name'
MESSAGE_ID = 'messaging.message.id'
JOB_ID = 'rq.job.id'
QUEUE = 'rq.queue'
FUNCTION = 'rq.job.func_name'
OUTCOME = 'rq.job.outcome'

_cached: tuple[Any, Any] | None = None
_UNKNOWN = object()
# Without a provider, ``trace.get_tracer_provider()`` looks the environment up on every call (a
# per-job cost); the API's own global tells "none set" for free where this version has it.
_PROVIDER_FROM_ENV = 'OTEL_PYTHON_TRACER_PROVIDER' in os.environ


def _tracer() -> Any:
    """The aiorq tracer of the configured provider, or None while none is configured."""
    global _cached
    provider = getattr(trace, '_TRACER_PROVIDER', _UNKNOWN)
    if provider is None and not _PROVIDER_FROM_ENV:
        return None
    provider = trace.get_tracer_provider()
    if isinstance(provider, (ProxyTracerProvider, NoOpTracerProvider)):
        return None
    if _cached is None or _cached[0] is not provider:
        _cached = (provider, provider.get_tracer('aiorq', VERSION))
    return _cached[1]


def tracer_configured() -> bool:
    """Whether spans would be recorded now (a provider is configured), cheaply, for per-job checks."""
    return ENABLED and _tracer() is not None


def func_name(job: RQJob) -> str:
    """The job's function name; a job whose data cannot be decoded is reported, not raised, here."""
    try:
        return job.func_name or ''
    except Exception:
        return '<undecodable>'


def _job_attributes(job: RQJob, queue: str) -> dict[str, str]:
    return {
        SYSTEM: 'rq',
        DESTINATION: queue,
        MESSAGE_ID: job.id,
        JOB_ID: job.id,
        QUEUE: queue,
        FUNCTION: func_name(job),
    }


def inject(job: RQJob) -> None:
    """Store the current span's context in ``job.meta`` (a new dict: the caller's stays as it was)."""
    if not ENABLED or not trace.get_current_span().get_span_context().is_valid:
        return
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    if carrier:
        job.meta = {**(job.meta or {}), META_KEY: carrier}


def traced_enqueue(method: F) -> F:
    """Wrap an enqueuing ``Queue`` method in a producer span (the method itself without the extra)."""
    if not ENABLED:
        return method
    call: Any = method

    @functools.wraps(call)
    async def traced(self: Any, *args: Any, **kwargs: Any) -> Any:
        tracer = _tracer()
        if tracer is None:
            return await call(self, *args, **kwargs)
        attributes = {SYSTEM: 'rq', DESTINATION: self.name, QUEUE: self.name}
        with tracer.start_as_current_span(
            f'enqueue {self.name}', kind=SpanKind.PRODUCER, attributes=attributes
        ) as span:
            result = await call(self, *args, **kwargs)
            if isinstance(result, list):
                span.set_attribute('messaging.batch.message_count', len(result))
                span.set_attribute(JOB_ID, [job.id for job in result])
            else:
                rq_job = getattr(result, '_rq', result)
                span.set_attributes({MESSAGE_ID: rq_job.id, JOB_ID: rq_job.id, FUNCTION: func_name(rq_job)})
            return result

    return traced  # type: ignore[return-value]


@contextlib.contextmanager
def execution_span(job: RQJob | Callable[[], RQJob], queue: str) -> Iterator[None]:
    """A consumer span around one execution, child of the span that enqueued the job (if any).
    ``job`` may be a callable that builds it: called only when a tracer is configured."""
    tracer = _tracer() if ENABLED else None
    if tracer is None:
        yield
        return
    if not isinstance(job, RQJob):
        job = job()
    carrier = job.meta.get(META_KEY) if isinstance(job.meta, dict) else None
    parent = propagate.extract(carrier) if isinstance(carrier, dict) else None
    with tracer.start_as_current_span(
        f'perform {queue}', context=parent, kind=SpanKind.CONSUMER, attributes=_job_attributes(job, queue)
    ):
        yield


def set_outcome(outcome: str) -> None:
    """Name the outcome on the current execution span; ``failed`` also marks it as an error."""
    if not ENABLED:
        return
    span = trace.get_current_span()
    span.set_attribute(OUTCOME, outcome)
    if outcome == 'failed':
        span.set_status(Status(StatusCode.ERROR))


def record_exception(exc_info: Any) -> None:
    """Record the job's exception on the current execution span."""
    if not ENABLED or not isinstance(exc_info[1], BaseException):
        return
    span = trace.get_current_span()
    span.record_exception(exc_info[1])
    span.set_status(Status(StatusCode.ERROR, f'{type(exc_info[1]).__name__}: {exc_info[1]}'))


_STATUS_OUTCOMES = {
    JobStatus.FINISHED: 'finished',
    JobStatus.FAILED: 'failed',
    JobStatus.QUEUED: 'retried',
    JobStatus.SCHEDULED: 'retried',
    JobStatus.STOPPED: 'stopped',
}


def _flush() -> None:
    flush = getattr(trace.get_tracer_provider(), 'force_flush', None)
    if flush is not None:
        flush()


class TracingWorkerMixin:
    """Execution spans in a stock rq worker, continuing the enqueuing trace stored by aiorq.

    Configure the tracer provider where ``rq worker`` runs your code first, e.g. in its
    ``-c`` settings module. A forked work horse leaves with ``os._exit``: its spans are flushed first.
    """

    def perform_job(self, job: RQJob, queue: Any, *args: Any, **kwargs: Any) -> bool:
        with execution_span(job, queue.name):
            ok: bool = super().perform_job(job, queue, *args, **kwargs)  # type: ignore[misc]
            set_outcome(_STATUS_OUTCOMES.get(job.get_status(refresh=False), 'failed'))
        if ENABLED and getattr(self, 'is_horse', False):
            _flush()
        return ok

    def handle_exception(self, job: RQJob, *exc_info: Any) -> None:
        record_exception(exc_info)
        super().handle_exception(job, *exc_info)  # type: ignore[misc]

    def unsubscribe(self) -> None:
        """rq's, with the command listener told to stop first. rq 3.0 sends UNSUBSCRIBE, which
        wakes the listener's read, then stops it; redis-py 8.2's ``stop()`` waits for the
        listener, which by then may have begun its next 60 s read: the worker took a minute to
        exit. Told first (without waiting), the listener ends when UNSUBSCRIBE wakes it."""
        thread = getattr(self, 'pubsub_thread', None)
        if thread is not None and 'timeout' in inspect.signature(thread.stop).parameters:
            thread.stop(timeout=0)
        super().unsubscribe()  # type: ignore[misc]


class TracingWorker(TracingWorkerMixin, rq.worker.Worker):
    """``rq.Worker`` (fork per job) with execution spans: ``rq worker -w aiorq.tracing.TracingWorker``."""


class TracingSimpleWorker(TracingWorkerMixin, rq.worker.SimpleWorker):
    """``rq.SimpleWorker`` (jobs in the worker process) with execution spans."""
