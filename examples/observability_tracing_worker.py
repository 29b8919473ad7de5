"""A traced rq worker class: rq's ``SpawnWorker`` with ``aiorq.tracing.TracingWorkerMixin``.

    rq worker --path examples -c observability_otel_settings \\
        -w observability_tracing_worker.TracingSpawnWorker high default

A ``SpawnWorker`` runs each job in a fresh interpreter, which imports this module (to rebuild the
worker) but not the ``-c`` settings module: importing the settings here configures tracing there too.
"""

from __future__ import annotations

import observability_otel_settings  # noqa: F401  (sets the tracer provider, in the work horse as well)
import rq.worker

import aiorq.tracing


class TracingSpawnWorker(aiorq.tracing.TracingWorkerMixin, rq.worker.SpawnWorker):
    pass
