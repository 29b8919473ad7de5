"""Sentry for aiorq workers: each failed job becomes one Sentry event, tagged with its id,
function and queue, carrying the job's own traceback.

sentry-sdk's ``RqIntegration`` patches stock ``rq.Worker`` only, so aiorq ships an rq-style
exception handler instead (``pip install aiorq[sentry]``)::

    SENTRY_DSN=https://key@sentry.example/1 aiorq worker --exception-handler aiorq_worker.sentry.sentry_handler

or, in Python, ``Worker(..., exception_handlers=[register_sentry(dsn)])``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from rq.job import Job as RQJob
from rq.timeouts import JobTimeoutException

from aiorq.tracing import func_name

try:
    import sentry_sdk
    from sentry_sdk.integrations.logging import ignore_logger
    from sentry_sdk.scope import should_send_default_pii
    from sentry_sdk.utils import event_from_exception
except ImportError:
    AVAILABLE = False
else:
    AVAILABLE = True

logger = logging.getLogger('aiorq.worker')

MISSING = 'the Sentry handler needs sentry-sdk: pip install aiorq[sentry]'
_ready = False


def _setup() -> None:
    """Once: the worker's own error log line must not become a second, untagged event."""
    global _ready
    if not _ready:
        _ready = True
        ignore_logger('aiorq.worker')


def register_sentry(dsn: str | None = None, **options: Any) -> Callable[..., bool]:
    """``sentry_sdk.init(dsn, **options)``; returns :func:`sentry_handler` for ``exception_handlers``."""
    if not AVAILABLE:
        raise ImportError(MISSING)
    sentry_sdk.init(dsn, **options)
    _setup()
    return sentry_handler


def sentry_handler(job: RQJob, exc_type: Any, exc_value: Any, traceback: Any) -> bool:
    """rq exception handler: report the failure and let the next handler run.

    Sentry is initialised from the environment (``SENTRY_DSN``, ``SENTRY_ENVIRONMENT``,
    ``SENTRY_RELEASE``) on first use unless the application initialised it already.
    """
    if not AVAILABLE:
        if not _ready:
            globals()['_ready'] = True
            logger.warning('aiorq_worker.sentry: %s; failures are not reported', MISSING)
        return True
    if not sentry_sdk.is_initialized():
        sentry_sdk.init()
    _setup()
    client = sentry_sdk.get_client()
    function = func_name(job)
    details: dict[str, Any] = {'job_id': job.id, 'func': function, 'queue': job.origin}
    try:
        details['description'] = job.description
        if should_send_default_pii():
            details['args'], details['kwargs'] = job.args, job.kwargs
    except Exception:
        pass  # undecodable data: report the failure without it
    exc_info = (exc_type, exc_value, traceback)
    event, hint = event_from_exception(
        exc_info, client_options=client.options, mechanism={'type': 'aiorq', 'handled': False}
    )
    if isinstance(exc_value, JobTimeoutException):
        event['fingerprint'] = ['rq', 'JobTimeoutException', function]
    with sentry_sdk.new_scope() as scope:
        scope.set_tag('rq.queue', job.origin)
        scope.set_tag('rq.job_id', job.id)
        scope.set_tag('rq.func', function)
        scope.set_context('rq-job', details)
        sentry_sdk.capture_event(event, hint=hint)
    return True
