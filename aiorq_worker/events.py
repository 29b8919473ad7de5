"""Job events, and the listeners that turn them into logs, counts, metrics and spans.

The runner, admission, maintenance and the loop watchdog report what happens through one
:class:`Events` value; they neither log outcomes nor know of metrics or tracing. ``worker.py``
registers the listeners. A listener implements any of :class:`Listener`'s methods; one that
raises is logged and does not disturb the job or the other listeners.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from enum import Enum
from typing import Any, Protocol

from rq.job import Job as RQJob

from aiorq import tracing

from .execution import Execution

logger = logging.getLogger('aiorq.worker')


def _log(level: int, msg: str, *args: Any) -> None:
    """``logger.log(level, msg, *args)`` with the record's caller taken from the frame that called
    this: the same file, line and function ``logging``'s ``findCaller`` would find by walking the
    stack (two lines per job make that walk a visible share of the worker's time)."""
    if logger.isEnabledFor(level):
        frame = sys._getframe(1)
        code = frame.f_code
        record = logger.makeRecord(logger.name, level, code.co_filename, frame.f_lineno, msg, args, None, code.co_name)
        logger.handle(record)


class Ending(Enum):
    """How an execution ended: the log line, the outcome kind (metrics, spans), whether it failed."""

    OK = ('Job OK', 'finished', False)
    RETURNED_RETRY = ('Job returned Retry', 'retried', False)
    RETRYING = ('Job failed, retrying', 'retried', True)
    FAILED = ('Job failed', 'failed', True)
    STOPPED = ('Job stopped', 'stopped', True)
    CANCELLED = ('Job cancelled by cold shutdown', 'cancelled', True)

    # Plain attributes, set once below: an Enum's ``value`` is a descriptor, read per job.
    line: str
    kind: str
    error: bool


for _ending in Ending:
    _ending.line, _ending.kind, _ending.error = _ending.value


class Listener:
    """What a listener may hear; each method does nothing unless overridden.

    ``job_started``, ``job_raised``, ``job_ended`` and ``job_left`` run in the execution's own task
    (its context: a span made current there is the job's); ``job_left`` comes last, always.
    """

    def job_started(self, ex: Execution) -> None:
        """An execution begins (before the job's function is called)."""

    def job_raised(self, ex: Execution, exc_info: Any) -> None:
        """The job (or its callback) raised ``exc_info``; its failure is about to be recorded."""

    def job_ended(self, ex: Execution, ending: Ending) -> None:
        """The execution's outcome (recorded, or left for recovery at a cold shutdown)."""

    def job_left(self, ex: Execution) -> None:
        """The execution's task is done with it, whatever happened (even an unexpected cancel)."""

    def job_abandoned(self, job: RQJob) -> None:
        """Maintenance found ``job`` abandoned (its worker died) and recovers it."""

    def loop_blocked(self, seconds: float, ex: Execution | None) -> None:
        """The event loop was held ``seconds`` (by ``ex``, when the watchdog could tell)."""

    def reconnected(self) -> None:
        """Admission reached Redis again after losing it."""


_EVENTS = ('job_started', 'job_raised', 'job_ended', 'job_left', 'job_abandoned', 'loop_blocked', 'reconnected')


def _heard(event: str) -> Callable[[Any], tuple[Any, Any] | None]:
    """What calls ``listener``'s ``event``: None when it is :class:`Listener`'s no-op; a listener
    without the method gets a call that raises, as looking it up per event did (and is logged)."""

    def heard(listener: Any) -> tuple[Any, Any] | None:
        method = getattr(listener, event, None)
        if method is None:
            return listener, functools.partial(_missing, listener, event)
        if getattr(method, '__func__', None) is getattr(Listener, event):
            return None
        return listener, method

    return heard


def _missing(listener: Any, event: str, *_: Any) -> None:
    getattr(listener, event)  # raises AttributeError


class Events(Listener):
    """Hands each event to every registered listener, in order."""

    def __init__(self, *listeners: Listener) -> None:
        self.listeners = list(listeners)
        self._planned: list[Listener] = []
        self._plan: dict[str, list[tuple[Any, Any]]] = {}

    def add(self, listener: Listener) -> None:
        self.listeners.append(listener)

    def _handlers(self, event: str) -> list[tuple[Any, Any]]:
        """(listener, method) for each listener that hears ``event``: those that do not override
        it are left out (three events per job would otherwise call every listener's no-op).
        Made again whenever ``listeners`` changed (a plain list: callers may change it in place)."""
        if self.listeners != self._planned:
            self._planned = list(self.listeners)
            self._plan = {name: [h for h in map(_heard(name), self._planned) if h is not None] for name in _EVENTS}
        return self._plan[event]

    def _each(self, event: str, *args: Any) -> None:
        for listener, method in self._handlers(event):
            try:
                method(*args)
            except Exception:
                logger.exception('Listener %r failed on %s', listener, event)

    def job_started(self, ex: Execution) -> None:
        self._each('job_started', ex)

    def job_raised(self, ex: Execution, exc_info: Any) -> None:
        self._each('job_raised', ex, exc_info)

    def job_ended(self, ex: Execution, ending: Ending) -> None:
        self._each('job_ended', ex, ending)

    def job_left(self, ex: Execution) -> None:
        self._each('job_left', ex)

    def job_abandoned(self, job: RQJob) -> None:
        self._each('job_abandoned', job)

    def loop_blocked(self, seconds: float, ex: Execution | None) -> None:
        self._each('loop_blocked', seconds, ex)

    def reconnected(self) -> None:
        self._each('reconnected')


class LogListener(Listener):
    """The worker's log lines for each job (rq's, with the queue first)."""

    def __init__(self, worker_name: str, describe: bool = True) -> None:
        self.worker_name = worker_name
        self.describe = describe  # log the job's description (``--disable-job-desc-logging``)

    def job_started(self, ex: Execution) -> None:
        if self.describe:
            _log(logging.INFO, '%s: %s (%s)', ex.queue, ex.description, ex.job_id)
        else:
            _log(logging.INFO, '%s: %s', ex.queue, ex.job_id)

    def job_ended(self, ex: Execution, ending: Ending) -> None:
        _log(logging.WARNING if ending.error else logging.INFO, '%s: %s (%s)', ex.queue, ending.line, ex.job_id)

    def reconnected(self) -> None:
        logger.info('Worker %s: Redis reachable again', self.worker_name)


class JobCounts(Listener):
    """Jobs this worker ended, successful and failed (``Worker.successful_job_count``...)."""

    def __init__(self) -> None:
        self.successful = 0
        self.failed = 0

    def job_ended(self, ex: Execution, ending: Ending) -> None:
        if ending.error:
            self.failed += 1
        else:
            self.successful += 1


class TracingListener(Listener):
    """A consumer span per execution (continuing the enqueuing trace), its outcome and error.
    While no tracer is configured an execution gets no span and nothing is kept for it."""

    def __init__(self) -> None:
        self._spans: dict[str, Any] = {}

    def job_started(self, ex: Execution) -> None:
        if tracing.tracer_configured():
            span = tracing.execution_span(lambda: ex.job, ex.queue)
            span.__enter__()
            self._spans[ex.id] = span

    def job_raised(self, ex: Execution, exc_info: Any) -> None:
        if ex.id in self._spans:
            tracing.record_exception(exc_info)  # on the execution's span: current in its task

    def job_ended(self, ex: Execution, ending: Ending) -> None:
        if ex.id in self._spans:
            tracing.set_outcome(ending.kind)

    def job_left(self, ex: Execution) -> None:
        span = self._spans.pop(ex.id, None)
        if span is not None:
            span.__exit__(None, None, None)


class Counter(Protocol):
    def job_ended(self, queue_name: str, kind: str) -> None: ...


class ThroughputListener(Listener):
    """Jobs that ended for good, per queue, for the dashboard's throughput chart
    (``aiorq_worker.throughput.ThroughputRecorder``): finished, or failed (stopped and cancelled
    ones included, as rq records them); a job left to a retry has not ended yet."""

    KINDS = {'finished': 'finished', 'failed': 'failed', 'stopped': 'failed', 'cancelled': 'failed'}

    def __init__(self, recorder: Counter) -> None:
        self.recorder = recorder

    def job_ended(self, ex: Execution, ending: Ending) -> None:
        kind = self.KINDS.get(ending.kind)
        if kind is not None:
            self.recorder.job_ended(ex.queue, kind)
