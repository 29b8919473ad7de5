"""Without prometheus_client, opentelemetry and sentry-sdk: aiorq imports and works, the hooks
are no-ops, and an explicit ``--metrics-port`` fails with one line naming the extra."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import redis
import rq
import tasks
from processes import Processes
from redis_server import free_port

SHADOWED = ('prometheus_client', 'opentelemetry', 'sentry_sdk')


def without_extras(tmp_path: Path) -> dict[str, str]:
    """An environment where importing any of the extras raises ImportError, as if not installed."""
    for name in SHADOWED:
        (tmp_path / name).mkdir()
        (tmp_path / name / '__init__.py').write_text(f'raise ImportError("no {name} here")\n')
    return {**os.environ, 'PYTHONPATH': os.pathsep.join([str(tmp_path), os.environ.get('PYTHONPATH', '')])}


def test_imports_and_runs_without_extras(
    sync_conn: redis.Redis, redis_url: str, processes: Processes, tmp_path: Path
) -> None:
    env = without_extras(tmp_path)
    check = (
        'import aiorq, aiorq.tracing, aiorq_worker.cli, aiorq_worker.metrics, aiorq_worker.sentry\n'
        'assert not aiorq.tracing.ENABLED and not aiorq_worker.metrics.AVAILABLE\n'
        'assert not aiorq_worker.sentry.AVAILABLE\n'
    )
    done = subprocess.run([sys.executable, '-c', check], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr

    job = rq.Queue('bare', connection=sync_conn).enqueue(tasks.fail, 'unreported')
    cmd = [sys.executable, '-m', 'aiorq_worker', 'worker', '--url', redis_url, '--burst', 'bare']
    proc = processes.start('bare', [*cmd, '--exception-handler', 'aiorq_worker.sentry.sentry_handler'], env=env)
    assert proc.wait(60) == 0, processes.log(proc)
    assert job.get_status() == 'failed'
    assert 'pip install aiorq[sentry]' in processes.log(proc)

    proc = processes.start('metered', [*cmd, '--metrics-port', str(free_port())], env=env)
    assert proc.wait(60) == 1
    out = processes.log(proc).strip()
    assert out == 'aiorq worker: --metrics-port: metrics need prometheus_client: pip install aiorq[metrics]', out
