"""``aiorq worker --metrics-port``: a real worker process scraped over HTTP, exact values."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import docs_page
import pytest
import redis
import rq
import tasks
from processes import Processes
from prometheus_client.parser import text_string_to_metric_families
from redis_server import free_port
from rq.job import Job as RQJob
from rq.job import JobStatus

HERE = Path(__file__).resolve().parent
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def env() -> dict[str, str]:
    return {**os.environ, 'PYTHONPATH': os.pathsep.join([str(HERE), os.environ.get('PYTHONPATH', '')])}


def aiorq_worker(url: str, *options: str) -> list[str]:
    return [sys.executable, '-m', 'aiorq_worker', 'worker', '--url', url, *options]


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f'http://127.0.0.1:{port}/metrics', timeout=5) as response:
        text = response.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def wait_until(check: Callable[[], bool], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f'timed out waiting for {what}'
        time.sleep(0.05)


def scraped_when(port: int, check: Callable[[Samples], bool], what: str, timeout: float = 20) -> Samples:
    found: list[Samples] = []

    def ready() -> bool:
        try:
            found[:] = [scrape(port)]
        except OSError:
            return False  # the server is not up yet
        return check(found[0])

    wait_until(ready, what, timeout)
    return found[0]


def abandon_a_job(sync_conn: redis.Redis, redis_url: str, processes: Processes) -> str:
    """A worker SIGKILLed mid-job on queue ``doomed``, its heartbeat deadline moved to the past
    (the state Redis holds a minute later): the next maintenance pass finds it abandoned."""
    job = rq.Queue('doomed', connection=sync_conn).enqueue('obs_tasks.hold', 'never')
    victim = processes.start('victim', aiorq_worker(redis_url, 'doomed'), env=env())
    wait_until(lambda: job.get_status() == JobStatus.STARTED, 'the job to start')
    os.kill(victim.pid, signal.SIGKILL)
    assert victim.wait(10) == -signal.SIGKILL
    members = sync_conn.zrange('rq:wip:doomed', 0, -1)
    assert len(members) == 1
    sync_conn.zadd('rq:wip:doomed', {members[0]: int(time.time()) - 1}, xx=True)
    return job.id


def test_scraped_metrics(sync_conn: redis.Redis, redis_url: str, processes: Processes) -> None:
    abandoned = abandon_a_job(sync_conn, redis_url, processes)
    q = rq.Queue('obs', connection=sync_conn)
    q.enqueue('obs_tasks.hold', 'release')  # holds the only slot while the others wait
    ok = [q.enqueue(tasks.add, i, 1) for i in range(3)]
    failing = q.enqueue(tasks.fail)
    retried = q.enqueue(tasks.fail, retry=rq.Retry(max=2))
    port = free_port()
    options = ('--metrics-port', str(port), '--concurrency', '1', '--maintenance-interval', '1')
    worker = processes.start('metered', aiorq_worker(redis_url, *options, 'obs', 'doomed'), env=env())

    busy = scraped_when(port, lambda s: value(s, 'aiorq_executions_in_flight') == 1, 'the held job')
    assert value(busy, 'aiorq_queue_depth', queue='obs') == 5
    assert value(busy, 'aiorq_queue_depth', queue='doomed') == 0
    # Start-up maintenance found the killed worker's job.
    assert value(busy, 'aiorq_jobs_abandoned_total', queue='doomed', function='obs_tasks.hold') == 1
    assert RQJob.fetch(abandoned, connection=sync_conn).get_status() == JobStatus.FAILED

    sync_conn.set('release', 1)
    final = [*ok, failing, retried]
    wait_until(
        lambda: [j.get_status() for j in final] == [JobStatus.FINISHED] * 3 + [JobStatus.FAILED] * 2,
        'every job to end',
    )
    done = scraped_when(port, lambda s: value(s, 'aiorq_executions_in_flight') == 0, 'an idle worker')
    add, fail, hold = ({'queue': 'obs', 'function': f} for f in ('tasks.add', 'tasks.fail', 'obs_tasks.hold'))
    expected = {
        ('aiorq_jobs_started_total', 'add'): 3,
        ('aiorq_jobs_started_total', 'fail'): 4,  # one plain failure, one job run three times
        ('aiorq_jobs_started_total', 'hold'): 1,
        ('aiorq_jobs_finished_total', 'add'): 3,
        ('aiorq_jobs_finished_total', 'hold'): 1,
        ('aiorq_jobs_failed_total', 'fail'): 2,
        ('aiorq_jobs_retried_total', 'fail'): 2,
        ('aiorq_job_duration_seconds_count', 'add'): 3,
        ('aiorq_job_duration_seconds_count', 'fail'): 4,
    }
    labels = {'add': add, 'fail': fail, 'hold': hold}
    for (name, which), count in expected.items():
        assert value(done, name, **labels[which]) == count, (name, which)
    for name in ('aiorq_jobs_failed_total', 'aiorq_jobs_retried_total'):
        assert value(done, name, **add) is None  # no series for what never happened
    assert value(done, 'aiorq_job_duration_seconds_sum', **hold) > 0
    assert value(done, 'aiorq_queue_depth', queue='obs') == 0
    age = value(done, 'aiorq_heartbeat_age_seconds')
    assert age is not None and 0 <= age < 40, age
    assert value(done, 'aiorq_redis_reconnects_total') == 0

    # Every client connection cut: admission notices, backs off, reaches Redis again.
    admin = redis.Redis(connection_pool=sync_conn.connection_pool)
    admin.client_kill_filter(_type='normal', skipme=True)
    scraped_when(port, lambda s: value(s, 'aiorq_redis_reconnects_total') == 1, 'the reconnect')
    late = q.enqueue(tasks.add, 20, 22)
    wait_until(lambda: late.get_status() == JobStatus.FINISHED, 'a job after the reconnect')
    after = scraped_when(port, lambda s: value(s, 'aiorq_jobs_finished_total', **add) == 4, 'the late job')
    assert value(after, 'aiorq_redis_reconnects_total') == 1
    assert worker.poll() is None, processes.log(worker)


def test_metrics_port_taken(sync_conn: redis.Redis, redis_url: str, processes: Processes) -> None:
    with socket.socket() as taken:
        taken.bind(('0.0.0.0', 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = processes.start('taken', aiorq_worker(redis_url, '--burst', '--metrics-port', str(port)))
        assert proc.wait(30) == 1
    out = processes.log(proc)
    assert f'aiorq worker: --metrics-port: cannot serve metrics on 127.0.0.1:{port}' in out, out
    assert 'Traceback' not in out
    assert not sync_conn.keys('rq:worker:*')  # it failed before registering


def non_loopback_address() -> str | None:
    """An IPv4 address of this machine other than loopback, that a socket can bind to."""
    candidates = [socket.gethostbyname(socket.gethostname())]
    for cmd in (['hostname', '-I'], ['ip', '-4', '-o', 'addr']):
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout
        except OSError:
            continue
        candidates += re.findall(r'(?<![\d.])(\d{1,3}(?:\.\d{1,3}){3})(?![\d.])', out)
    for address in candidates:
        if address.startswith('127.') or address.endswith('.255') or address == '0.0.0.0':
            continue
        with socket.socket() as s:
            try:
                s.bind((address, 0))
            except OSError:
                continue
        return address
    return None


def accepts(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=2):
            return True
    except OSError:
        return False


def test_metrics_listen_on_loopback_unless_told(sync_conn: redis.Redis, redis_url: str, processes: Processes) -> None:
    """The page names the queues and functions: by default only this machine can read it;
    ``--metrics-host 0.0.0.0`` opens it to every interface."""
    outside = non_loopback_address()
    port = free_port()
    proc = processes.start('loopback', aiorq_worker(redis_url, '--metrics-port', str(port), 'q'))
    wait_until(lambda: accepts('127.0.0.1', port), 'the metrics server')
    assert scrape(port), processes.log(proc)
    if outside is None:
        pytest.skip('this machine has no IPv4 address besides loopback')
    assert not accepts(outside, port), f'metrics reachable on {outside}:{port}'
    assert proc.poll() is None, processes.log(proc)

    port = free_port()
    proc = processes.start('open', aiorq_worker(redis_url, '--metrics-port', str(port), '--metrics-host', '0.0.0.0'))
    wait_until(lambda: accepts('127.0.0.1', port), 'the metrics server')
    assert accepts(outside, port)
    with urllib.request.urlopen(f'http://{outside}:{port}/metrics', timeout=5) as response:
        assert b'aiorq_executions_in_flight' in response.read()
    assert proc.poll() is None, processes.log(proc)


def test_metrics_port_as_documented(sync_conn: redis.Redis, redis_url: str, tmp_path: Path) -> None:
    """docs/observability.md's command as written, on a free port instead of 9100, Redis from $RQ_REDIS_URL."""
    [command] = docs_page.commands('test_metrics_port_as_documented')
    assert command == 'aiorq worker --metrics-port 9100 high default'
    port = free_port()
    job = rq.Queue('high', connection=sync_conn).enqueue(tasks.add, 2, 3)
    waiting = rq.Queue('other', connection=sync_conn).enqueue(tasks.add, 0, 0)  # a queue it does not serve
    pythonpath = str(HERE.parent)  # tests/, for tasks
    with docs_page.shell(
        command.replace('9100', str(port)), tmp_path, RQ_REDIS_URL=redis_url, PYTHONPATH=pythonpath
    ) as sh:
        samples = scraped_when(
            port,
            lambda s: value(s, 'aiorq_jobs_finished_total', queue='high', function='tasks.add') == 1,
            'the job on high',
        )
        assert job.get_status() == JobStatus.FINISHED and job.return_value() == 5
        assert value(samples, 'aiorq_queue_depth', queue='high') == 0
        assert value(samples, 'aiorq_queue_depth', queue='default') == 0
        assert value(samples, 'aiorq_queue_depth', queue='other') is None
        assert waiting.get_status() == JobStatus.QUEUED
        assert sh.stop() == 0, sh.log()


def test_metrics_example(sync_conn: redis.Redis, redis_url: str) -> None:
    """examples/observability_metrics.py prints what docs/observability.md says it prints."""
    env = {k: v for k, v in os.environ.items() if k not in ('REDIS_URL', 'RQ_REDIS_URL', 'PYTHONPATH')}
    example = docs_page.ROOT / 'examples' / 'observability_metrics.py'
    done = subprocess.run(
        [sys.executable, str(example)], env={**env, 'REDIS_URL': redis_url}, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    shown = re.search(
        r'--8<-- "examples/observability_metrics.py"\n```\n\nIt prints:\n\n```text\n(.*?)```',
        docs_page.PAGE.read_text(),
        re.S,
    )
    assert shown is not None, 'docs/observability.md does not show what the example prints'
    assert done.stdout == shown.group(1)
    assert not sync_conn.smembers('rq:workers')  # the worker stopped and unregistered
