"""rq's class options, where aiorq can use the class: ``-w`` runs the aiorq_worker.Worker
subclass, ``-j`` makes jobs see the aiorq.Job subclass (``aiorq.get_current_job()``), from the
option or from rq's environment variables."""

from __future__ import annotations

import pytest
import redis
import rq
from click.testing import CliRunner

from aiorq_worker.cli import main


@pytest.mark.parametrize('via', ['options', 'environment'])
def test_worker_and_job_class_are_used(via: str, sync_conn: redis.Redis, redis_url: str) -> None:
    q = rq.Queue('q', connection=sync_conn)
    jobs = [q.enqueue('cli_jobs.classes_seen'), q.enqueue('cli_jobs.classes_seen_in_thread')]
    args = ['worker', '--burst', '--loop', 'asyncio', '--url', redis_url, 'q']
    env: dict[str, str] = {}
    if via == 'options':
        args += ['-w', 'cli_jobs.MyWorker', '-j', 'cli_jobs.MyJob']
    else:
        env = {'RQ_WORKER_CLASS': 'cli_jobs.MyWorker', 'RQ_JOB_CLASS': 'cli_jobs.MyJob'}
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == 0, result.output
    for job in jobs:
        job.refresh()
        assert job.get_status() == 'finished', job.exc_info
        assert job.return_value() == ['MyJob', 'MyWorker', f'{job.id}!']


def test_rq_default_class_names_mean_aiorq_classes(sync_conn: redis.Redis, redis_url: str) -> None:
    """rq's own default class names mean aiorq's classes."""
    job = rq.Queue('q', connection=sync_conn).enqueue('tasks.async_add', 1, 2)
    classes = ['-j', 'rq.job.Job', '--queue-class', 'rq.Queue']
    args = ['worker', '--burst', '--loop', 'asyncio', '--url', redis_url, *classes, 'q']
    result = CliRunner().invoke(main, args, env={'RQ_CONNECTION_CLASS': 'redis.Redis'})
    assert result.exit_code == 0, result.output
    assert job.latest_result().return_value == 3
