"""What the ``aiorq worker`` command does to its own process beyond running the worker."""

from __future__ import annotations

import subprocess
import sys

import redis
import rq


def test_the_worker_command_freezes_what_start_up_made(redis_url: str, sync_conn: redis.Redis) -> None:
    """``aiorq worker`` moves start-up's objects out of the collector's sight (``gc.freeze()``),
    so that full collections stay short while jobs run: a job reads the frozen count."""
    job = rq.Queue('frozen', connection=sync_conn).enqueue('gc.get_freeze_count')
    done = subprocess.run(
        [sys.executable, '-m', 'aiorq_worker', 'worker', '--url', redis_url, '--burst', 'frozen'],
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr.decode()
    job.refresh()
    assert job.get_status() == 'finished' and job.return_value() > 10_000
