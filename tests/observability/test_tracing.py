"""OpenTelemetry: the enqueue span's context travels in the job; aiorq workers and stock rq
workers (with ``aiorq.tracing``) continue the trace."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import docs_page
import obs_tasks
import pytest
import redis
import tasks
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.util._once import Once
from redis.asyncio import Redis
from rq.job import Job as RQJob
from rq.job import JobStatus

import aiorq
from aiorq import Queue
from aiorq.tracing import META_KEY, TracingSimpleWorker
from aiorq_worker import Worker


def _reset_global_provider() -> None:
    # What opentelemetry's own test utilities do: the global provider can be set once per process,
    # and the rest of the suite must run without one.
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    _reset_global_provider()
    trace.set_tracer_provider(provider)
    try:
        yield exporter
    finally:
        _reset_global_provider()
        provider.shutdown()


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


def only(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    found = named(exporter, name)
    assert len(found) == 1, [s.name for s in exporter.get_finished_spans()]
    return found[0]


def assert_continues(perform: ReadableSpan, enqueue: ReadableSpan) -> None:
    assert perform.context is not None and enqueue.context is not None and perform.parent is not None
    assert perform.context.trace_id == enqueue.context.trace_id
    assert perform.parent.span_id == enqueue.context.span_id
    assert perform.parent.is_remote  # it came through Redis


async def test_aiorq_worker_continues_the_enqueuing_trace(
    conn: Redis, sync_conn: redis.Redis, spans: InMemorySpanExporter
) -> None:
    q = Queue('traced', connection=conn)
    tracer = trace.get_tracer('test')
    user_meta = {'mine': 1}
    with tracer.start_as_current_span('request') as request:
        ok = await q.enqueue(obs_tasks.traced_child, meta=user_meta)
        bad = await q.enqueue(tasks.fail, 'kaboom')
    assert user_meta == {'mine': 1}  # the caller's dict is not written into
    await Worker('traced', connection=conn, name='tracer').work(burst=True)

    enqueues = named(spans, 'enqueue traced')
    assert len(enqueues) == 2
    for span in enqueues:
        assert span.parent is not None and span.parent.span_id == request.get_span_context().span_id
        assert span.kind == SpanKind.PRODUCER
    by_job = {s.attributes['rq.job.id']: s for s in enqueues if s.attributes}
    performs = {s.attributes['rq.job.id']: s for s in named(spans, 'perform traced') if s.attributes}
    assert sorted(performs) == sorted([ok.id, bad.id])

    good = performs[ok.id]
    assert_continues(good, by_job[ok.id])
    assert good.kind == SpanKind.CONSUMER
    assert dict(good.attributes or {}) == {
        'messaging.system': 'rq',
        'messaging.destination.name': 'traced',
        'messaging.message.id': ok.id,
        'rq.job.id': ok.id,
        'rq.queue': 'traced',
        'rq.job.func_name': 'obs_tasks.traced_child',
        'rq.job.outcome': 'finished',
    }
    child = only(spans, 'inside the job')  # the job's own span, in a worker thread
    assert child.parent is not None and good.context is not None
    assert child.parent.span_id == good.context.span_id

    failed = performs[bad.id]
    assert_continues(failed, by_job[bad.id])
    assert failed.attributes is not None and failed.attributes['rq.job.outcome'] == 'failed'
    assert failed.status.status_code == StatusCode.ERROR
    [event] = [e for e in failed.events if e.name == 'exception']
    assert event.attributes is not None
    assert event.attributes['exception.type'] == 'ValueError'
    assert event.attributes['exception.message'] == 'kaboom'
    # The context is plain strings in meta: what stock rq reads back.
    stored = RQJob.fetch(ok.id, connection=sync_conn)
    assert stored.meta['mine'] == 1
    assert stored.meta[META_KEY]['traceparent'].split('-')[1] == format(request.get_span_context().trace_id, '032x')


async def test_retries_and_batches_stay_in_the_trace(conn: Redis, spans: InMemorySpanExporter) -> None:
    q = Queue('traced', connection=conn)
    with trace.get_tracer('test').start_as_current_span('batch'):
        jobs = await q.enqueue_many([Queue.prepare_data(tasks.add, (1, 2)), Queue.prepare_data(tasks.add, (3, 4))])
        retried = await q.enqueue(tasks.fail, retry=aiorq.Retry(max=1))
    await Worker('traced', connection=conn, name='batcher').work(burst=True)

    enqueues = named(spans, 'enqueue traced')
    [many] = [s for s in enqueues if s.attributes and s.attributes.get('messaging.batch.message_count') == 2]
    assert many.attributes is not None and list(many.attributes['rq.job.id']) == [j.id for j in jobs]
    performs = named(spans, 'perform traced')
    for job in jobs:
        [perform] = [s for s in performs if s.attributes and s.attributes['rq.job.id'] == job.id]
        assert_continues(perform, many)
    [single] = [s for s in enqueues if s is not many]
    attempts = [s for s in performs if s.attributes and s.attributes['rq.job.id'] == retried.id]
    assert [s.attributes['rq.job.outcome'] for s in attempts if s.attributes] == ['retried', 'failed']
    for attempt in attempts:
        assert_continues(attempt, single)


async def test_stock_rq_worker_continues_the_trace(
    conn: Redis, sync_conn: redis.Redis, spans: InMemorySpanExporter
) -> None:
    q = Queue('stock', connection=conn)
    with trace.get_tracer('test').start_as_current_span('request'):
        ok = await q.enqueue(tasks.add, 2, 3)
        bad = await q.enqueue(tasks.fail, 'stock kaboom')
    worker = TracingSimpleWorker(['stock'], connection=sync_conn)
    assert worker.work(burst=True)
    enqueues = {s.attributes['rq.job.id']: s for s in named(spans, 'enqueue stock') if s.attributes}
    performs = {s.attributes['rq.job.id']: s for s in named(spans, 'perform stock') if s.attributes}
    assert_continues(performs[ok.id], enqueues[ok.id])
    assert_continues(performs[bad.id], enqueues[bad.id])
    assert performs[ok.id].attributes is not None and performs[bad.id].attributes is not None
    assert performs[ok.id].attributes['rq.job.outcome'] == 'finished'
    assert performs[ok.id].attributes['rq.job.func_name'] == 'tasks.add'
    assert performs[bad.id].attributes['rq.job.outcome'] == 'failed'
    assert performs[bad.id].status.status_code == StatusCode.ERROR
    assert [e.attributes['exception.message'] for e in performs[bad.id].events if e.attributes] == ['stock kaboom']
    assert await ok.result == 5


async def test_no_provider_no_trace_in_meta(conn: Redis) -> None:
    """Without a configured provider nothing is recorded and nothing is added to the job."""
    q = Queue('untraced', connection=conn)
    with trace.get_tracer('test').start_as_current_span('request'):
        job = await q.enqueue(tasks.add, 1, 1)
    assert META_KEY not in job.meta
    await Worker('untraced', connection=conn, name='plain').work(burst=True)
    assert await job.result == 2


# -- the commands of docs/observability.md, with examples/observability_otel_settings.py ---------


async def enqueue_traced(conn: Redis, spans: InMemorySpanExporter) -> dict[str, tuple[str, str, ReadableSpan]]:
    """Two jobs of examples/mylib.py enqueued inside a request span: job id -> (queue, outcome, enqueue span)."""
    with trace.get_tracer('test').start_as_current_span('request'):
        ok = await Queue('high', connection=conn).enqueue('mylib.add', 2, 3)
        bad = await Queue('default', connection=conn).enqueue('mylib.divide', 1, 0)
    enqueues = {
        s.attributes['rq.job.id']: s for s in spans.get_finished_spans() if s.attributes and s.kind == SpanKind.PRODUCER
    }
    return {ok.id: ('high', 'finished', enqueues[ok.id]), bad.id: ('default', 'failed', enqueues[bad.id])}


def check_console_spans(out: str, jobs: dict[str, tuple[str, str, ReadableSpan]]) -> None:
    """The worker printed one execution span per job, each a child of the job's enqueue span."""
    performs = [s for s in docs_page.console_spans(out) if s['name'].startswith('perform ')]
    by_job = {s['attributes']['rq.job.id']: s for s in performs}
    assert sorted(by_job) == sorted(jobs) and len(performs) == len(jobs), out
    for job_id, (queue, outcome, enqueue) in jobs.items():
        span = by_job[job_id]
        assert enqueue.context is not None
        assert span['name'] == f'perform {queue}'
        assert span['kind'] == 'SpanKind.CONSUMER'
        assert span['context']['trace_id'] == f'0x{enqueue.context.trace_id:032x}'
        assert span['parent_id'] == f'0x{enqueue.context.span_id:016x}'
        assert span['attributes']['rq.job.outcome'] == outcome
        assert (span['status']['status_code'] == 'ERROR') == (outcome == 'failed')
        assert span['resource']['attributes']['service.name'] == 'aiorq-worker'


async def run_documented(
    command: str, conn: Redis, sync_conn: redis.Redis, redis_url: str, spans: InMemorySpanExporter, directory: Path
) -> None:
    """Jobs enqueued in a trace, the documented worker command, its printed spans continuing the trace."""
    sync_conn.flushdb()
    spans.clear()
    jobs = await enqueue_traced(conn, spans)
    stored = [RQJob.fetch(job_id, connection=sync_conn) for job_id in jobs]
    directory.mkdir()
    with docs_page.shell(command, directory, REDIS_URL=redis_url) as sh:  # the settings module reads it
        docs_page.wait_until(
            lambda: [j.get_status() for j in stored] == [JobStatus.FINISHED, JobStatus.FAILED] or sh.proc.poll(),
            'the jobs to end',
        )
        assert sh.proc.poll() is None, sh.log()
        assert sh.stop() == 0, sh.log()
    assert stored[0].return_value() == 5
    check_console_spans(sh.out(), jobs)


async def test_aiorq_worker_with_otel_settings(
    conn: Redis, sync_conn: redis.Redis, redis_url: str, spans: InMemorySpanExporter, tmp_path: Path
) -> None:
    [command] = docs_page.commands('test_aiorq_worker_with_otel_settings')
    assert command == 'aiorq worker --path examples -c observability_otel_settings high default'
    await run_documented(command, conn, sync_conn, redis_url, spans, tmp_path / 'aiorq')


async def test_stock_rq_workers_with_otel_settings(
    conn: Redis, sync_conn: redis.Redis, redis_url: str, spans: InMemorySpanExporter, tmp_path: Path
) -> None:
    commands = docs_page.commands('test_stock_rq_workers_with_otel_settings')
    prefix = 'rq worker --path examples -c observability_otel_settings -w '
    assert commands == [
        f'{prefix}aiorq.tracing.TracingWorker high default',
        f'{prefix}aiorq.tracing.TracingSimpleWorker high default   # no fork',
        f'{prefix}observability_tracing_worker.TracingSpawnWorker high default',
    ]
    for i, command in enumerate(commands):
        await run_documented(command, conn, sync_conn, redis_url, spans, tmp_path / str(i))


@pytest.mark.parametrize('cls', ['TracingWorker', 'TracingSimpleWorker'])
def test_aiorq_rq_worker_classes_stop_at_once(redis_url: str, cls: str) -> None:
    """rq 3.0 with redis-py 8.2 stops its command listener in an order that can make a worker
    wait 60 s to exit (see tests/sitecustomize.py, which the tests' other processes load); aiorq's
    rq worker classes do not. Run without that test-only patch, each burst ends within seconds."""
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    for _ in range(6):
        began = time.monotonic()
        subprocess.run(
            [sys.executable, '-m', 'rq.cli', 'worker', '--burst', '--url', redis_url, '-w', f'aiorq.tracing.{cls}'],
            env=env,
            capture_output=True,
            timeout=50,
            check=True,
        )
        assert time.monotonic() - began < 20
