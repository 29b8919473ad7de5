"""Sentry: a real ``aiorq worker`` process reports a failed job to a local Sentry endpoint."""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import docs_page
import pytest
import redis
import rq
import tasks
from processes import Processes

EXAMPLES = Path(__file__).resolve().parents[2] / 'examples'


class FakeSentry(ThreadingHTTPServer):
    """Accepts envelopes (``POST /api/<project>/envelope/``) and keeps their events."""

    def __init__(self) -> None:
        super().__init__(('127.0.0.1', 0), _Handler)
        self.events: list[dict[str, Any]] = []

    @property
    def dsn(self) -> str:
        return f'http://public@127.0.0.1:{self.server_port}/1'


class _Handler(BaseHTTPRequestHandler):
    server: FakeSentry

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers['Content-Length']))
        encoding = self.headers.get('Content-Encoding')
        if encoding == 'gzip':
            body = gzip.decompress(body)
        elif encoding == 'br':
            import brotli

            body = brotli.decompress(body)
        lines = body.split(b'\n')
        for header, payload in zip(lines[1::2], lines[2::2]):
            if json.loads(header).get('type') == 'event':
                self.server.events.append(json.loads(payload))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def sentry() -> Iterator[FakeSentry]:
    server = FakeSentry()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_failed_job_reaches_sentry(
    sync_conn: redis.Redis, redis_url: str, processes: Processes, sentry: FakeSentry
) -> None:
    q = rq.Queue('watched', connection=sync_conn)
    bad = q.enqueue(tasks.fail, 'reported')
    good = q.enqueue(tasks.add, 1, 2)
    cmd = [sys.executable, '-m', 'aiorq_worker', 'worker', '--url', redis_url, '--burst', 'watched']
    cmd += ['--exception-handler', 'aiorq_worker.sentry.sentry_handler']
    proc = processes.start('reported', cmd, env={**os.environ, 'SENTRY_DSN': sentry.dsn})
    assert proc.wait(60) == 0, processes.log(proc)
    assert good.get_status() == 'finished'
    # One event: the worker's own error log line is not reported a second time.
    [event] = sentry.events
    assert event['tags'] == {'rq.queue': 'watched', 'rq.job_id': bad.id, 'rq.func': 'tasks.fail'}
    assert event['contexts']['rq-job']['job_id'] == bad.id
    assert event['contexts']['rq-job']['func'] == 'tasks.fail'
    assert 'args' not in event['contexts']['rq-job']  # arguments only with send_default_pii
    [exception] = event['exception']['values']
    assert exception['type'] == 'ValueError' and exception['value'] == 'reported'
    assert exception['mechanism'] == {'type': 'aiorq', 'handled': False}
    frames = exception['stacktrace']['frames']
    assert frames[-1]['function'] == 'fail' and frames[-1]['module'] == 'tasks'
    # The job is still recorded as failed, as without the handler.
    assert bad.get_status() == 'failed'


DOCS_DSN = 'https://<key>@<org>.ingest.sentry.io/<project>'


def test_sentry_handler_as_documented(
    sync_conn: redis.Redis, redis_url: str, sentry: FakeSentry, tmp_path: Path
) -> None:
    """docs/observability.md's command as written, with the local endpoint's DSN for the placeholder."""
    [command] = docs_page.commands('test_sentry_handler_as_documented')
    handler = 'aiorq_worker.sentry.sentry_handler'
    assert command == f'SENTRY_DSN={DOCS_DSN} \\\n    aiorq worker --exception-handler {handler} high default'
    bad = rq.Queue('high', connection=sync_conn).enqueue(tasks.fail, 'documented')
    pythonpath = str(Path(tasks.__file__).parent)
    with docs_page.shell(
        command.replace(DOCS_DSN, sentry.dsn), tmp_path, RQ_REDIS_URL=redis_url, PYTHONPATH=pythonpath
    ) as sh:
        docs_page.wait_until(lambda: sentry.events or sh.proc.poll() is not None, 'the Sentry event')
        assert sh.proc.poll() is None, sh.log()
        assert bad.get_status() == 'failed'
        assert sh.stop() == 0, sh.log()
    [event] = sentry.events
    assert event['tags'] == {'rq.queue': 'high', 'rq.job_id': bad.id, 'rq.func': 'tasks.fail'}
    assert event['exception']['values'][-1]['value'] == 'documented'


def test_register_sentry_example(sync_conn: redis.Redis, redis_url: str, sentry: FakeSentry) -> None:
    """examples/observability_sentry.py: one event for its failed job, with the environment it chose."""
    env = {k: v for k, v in os.environ.items() if k not in ('REDIS_URL', 'RQ_REDIS_URL', 'PYTHONPATH')}
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / 'observability_sentry.py')],
        env={**env, 'REDIS_URL': redis_url, 'SENTRY_DSN': sentry.dsn},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    [job_id] = re.findall(r'^job (\S+): failed, reported to Sentry$', done.stdout, re.M)
    [event] = sentry.events  # sent by the time the script exits
    assert event['environment'] == 'production'
    assert event['tags'] == {'rq.queue': 'default', 'rq.job_id': job_id, 'rq.func': 'mylib.divide'}
    [exception] = event['exception']['values']
    assert exception['type'] == 'ZeroDivisionError'
