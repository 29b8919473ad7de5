"""A worker settings module that turns on OpenTelemetry tracing (``-c observability_otel_settings``).

    aiorq worker --path examples -c observability_otel_settings high default
    rq worker --path examples -c observability_otel_settings -w aiorq.tracing.TracingWorker high default

Each finished span is printed to stdout as JSON by the SDK's ``ConsoleSpanExporter``. To send
spans to a collector instead, ``pip install opentelemetry-exporter-otlp`` and use
``BatchSpanProcessor(OTLPSpanExporter())`` (from
``opentelemetry.exporter.otlp.proto.grpc.trace_exporter``); it reads ``OTEL_EXPORTER_OTLP_ENDPOINT``.
"""

from __future__ import annotations

import os

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

provider = TracerProvider(resource=Resource.create({'service.name': 'aiorq-worker'}))
provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
trace.set_tracer_provider(provider)  # the provider flushes its spans when the process exits

# Read like any rq settings module; the worker's --url (or $RQ_REDIS_URL) wins over it.
REDIS_URL = os.environ.get('REDIS_URL', 'redis://127.0.0.1:6399/0')
