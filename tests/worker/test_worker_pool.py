"""``aiorq worker-pool``: N real ``aiorq worker`` processes under one parent, read back with stock rq.

Each test runs the pool as a process against the tests' private Redis, and judges it by what
stock rq reads (``rq.Worker.all``, ``rq info``, job hashes): each child is a worker of its own,
children run jobs side by side, a child killed with SIGKILL is replaced and its job recovered,
SIGTERM/SIGINT are a warm then a cold shutdown, and a broken setup is retried with a growing delay
rather than in a loop.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Collection
from pathlib import Path
from typing import TypeVar

import pytest
import redis
import rq
import tasks
from click.testing import CliRunner
from processes import Processes
from redis_server import free_port
from rq.command import send_shutdown_command
from rq.job import Job as RQJob
from rq.job import JobStatus

from aiorq_worker.cli import main
from aiorq_worker.cli import worker as worker_command
from aiorq_worker.pool import child_command, worker_pool

QUEUE = 'pooled'
T = TypeVar('T')


def pool_command(url: str, *options: str) -> list[str]:
    return [sys.executable, '-m', 'aiorq_worker', 'worker-pool', '--url', url, *options, QUEUE]


def until(predicate: Callable[[], T], pool: subprocess.Popen[bytes], processes: Processes, timeout: float = 30) -> T:
    """``predicate()`` once truthy; fails at once, with the pool's output, if the pool ended."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert pool.poll() is None, f'the pool ended with {pool.returncode}\n{processes.log(pool)}'
        assert time.monotonic() < deadline, f'condition not met in {timeout}s\n{processes.log(pool)}'
        time.sleep(0.05)


def live_workers(conn: redis.Redis, count: int, exclude: Collection[str] = ()) -> list[rq.Worker] | None:
    """The workers rq lists (``rq:workers``, what ``rq info`` reads), when ``count`` of them are
    registered and started (not counting ``exclude``)."""
    workers = [w for w in rq.Worker.all(connection=conn) if w.name not in exclude]
    ready = [w for w in workers if conn.hget(f'rq:worker:{w.name}', 'state') not in (None, b'started')]
    return sorted(workers, key=lambda w: w.name) if len(workers) == count and len(ready) == count else None


def statuses(conn: redis.Redis, ids: list[str]) -> list[JobStatus | None]:
    return [j.get_status(refresh=False) if j else None for j in RQJob.fetch_many(ids, connection=conn)]


def worker_names_of(conn: redis.Redis, ids: list[str]) -> list[str]:
    return [(conn.hget(f'rq:job:{i}', 'worker_name') or b'').decode() for i in ids]


def dead_and_deregistered(conn: redis.Redis, names: list[str]) -> None:
    """Each worker registered its death as rq does: out of every worker set, ``death`` written."""
    assert conn.smembers('rq:workers') == set()
    assert not any(conn.sismember(f'rq:workers:{QUEUE}', f'rq:worker:{n}') for n in names)
    for name in names:
        assert conn.hget(f'rq:worker:{name}', 'death') is not None, name


def two_free_ports() -> int:
    """A port ``p`` with ``p + 1`` free too (``--metrics-port p -n 2`` takes both)."""
    while True:
        port = free_port()
        with socket.socket() as a, socket.socket() as b:
            try:
                a.bind(('127.0.0.1', port))
                b.bind(('127.0.0.1', port + 1))
            except OSError:
                continue
        return port


def started_count(port: int) -> float:
    """``aiorq_jobs_started_total`` of ``tasks.progress_then_wait`` on the metrics server at ``port``."""
    with urllib.request.urlopen(f'http://127.0.0.1:{port}/metrics', timeout=5) as response:
        text = response.read().decode()
    found = re.search(r'^aiorq_jobs_started_total\{[^}]*progress_then_wait[^}]*\} (\S+)$', text, flags=re.M)
    return float(found.group(1)) if found else 0.0


def test_two_workers_register_share_jobs_and_stop_warm(
    sync_conn: redis.Redis, redis_url: str, processes: Processes, tmp_path: Path
) -> None:
    """``-n 2``: two workers rq lists, each in its own process with its own metrics port, each
    running one of two jobs at once; after SIGTERM both jobs run to their end, then both workers
    register death."""
    port = two_free_ports()
    pid_file = tmp_path / 'pool.pid'
    options = ['-n', '2', '--name-prefix', 'web', '--concurrency', '1', '--metrics-port', str(port)]
    pool = processes.start('pool', pool_command(redis_url, *options, '--pid', str(pid_file)))
    workers = until(lambda: live_workers(sync_conn, 2), pool, processes)
    names = [w.name for w in workers]
    assert re.fullmatch(r'web-1-[0-9a-f]{6}', names[0]) and re.fullmatch(r'web-2-[0-9a-f]{6}', names[1]), names
    pids = {w.pid for w in workers}
    assert len(pids) == 2 and pool.pid not in pids
    assert pid_file.read_text() == str(pool.pid)
    # Each child in a session of its own: a Ctrl-C at a terminal reaches the pool alone.
    assert all(os.getsid(pid) == pid for pid in pids)
    for pid in pids:  # the URL reaches the children by their environment, not their command line
        assert redis_url.encode() not in Path(f'/proc/{pid}/cmdline').read_bytes()
    assert all(w.queue_names() == [QUEUE] for w in workers)

    rq_info = subprocess.run(
        [sys.executable, '-m', 'rq.cli', 'info', '--url', redis_url, '-W', '--raw'],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    aiorq_info = CliRunner().invoke(main, ['info', '--url', redis_url, '-W', '--raw'])
    assert aiorq_info.exit_code == 0, aiorq_info.output
    for name in names:
        assert f'worker {name} ' in rq_info.stdout, rq_info.stdout
        assert f'worker {name} ' in aiorq_info.stdout, aiorq_info.stdout
        assert f'concurrency {name} 1' in aiorq_info.stdout, aiorq_info.stdout

    queue = rq.Queue(QUEUE, connection=sync_conn)
    jobs = [queue.enqueue(tasks.progress_then_wait) for _ in range(2)]  # each waits for a push to `go`
    ids = [j.id for j in jobs]
    until(lambda: [j.get_meta().get('progress') for j in jobs] == [50, 50], pool, processes)  # both running
    assert statuses(sync_conn, ids) == [JobStatus.STARTED] * 2
    assert sorted(worker_names_of(sync_conn, ids)) == names  # one job each, at the same time
    assert (started_count(port), started_count(port + 1)) == (1.0, 1.0)

    os.kill(pool.pid, signal.SIGTERM)
    until(lambda: all(sync_conn.hget(f'rq:worker:{n}', 'shutdown_requested_date') for n in names), pool, processes)
    assert statuses(sync_conn, ids) == [JobStatus.STARTED] * 2  # a warm shutdown waits for them
    sync_conn.rpush('go', 1, 2)
    assert pool.wait(30) == 0, processes.log(pool)
    assert [j.return_value() for j in jobs] == ['done', 'done']
    dead_and_deregistered(sync_conn, names)
    assert sync_conn.zcard(f'rq:wip:{QUEUE}') == 0


@pytest.mark.parametrize(('first', 'second'), [(signal.SIGTERM, signal.SIGTERM), (signal.SIGINT, signal.SIGHUP)])
def test_a_second_signal_is_a_cold_shutdown(
    sync_conn: redis.Redis, redis_url: str, processes: Processes, first: signal.Signals, second: signal.Signals
) -> None:
    """A first stop signal asks each worker for a warm shutdown; a second one (SIGHUP: a closed
    terminal) cancels the jobs still running (30 s sleeps): they fail, and the pool exits 0."""
    pool = processes.start('pool', pool_command(redis_url, '-n', '2', '--concurrency', '1'))
    names = [w.name for w in until(lambda: live_workers(sync_conn, 2), pool, processes)]
    queue = rq.Queue(QUEUE, connection=sync_conn)
    ids = [queue.enqueue(tasks.slow_from_redis).id for _ in range(2)]
    until(lambda: sorted(x.decode() for x in sync_conn.lrange('ran', 0, -1)) == sorted(ids), pool, processes)
    assert statuses(sync_conn, ids) == [JobStatus.STARTED] * 2

    os.kill(pool.pid, first)
    # Both children took the first signal (a warm shutdown notes it in the worker record).
    until(lambda: all(sync_conn.hget(f'rq:worker:{n}', 'shutdown_requested_date') for n in names), pool, processes)
    assert statuses(sync_conn, ids) == [JobStatus.STARTED] * 2
    os.kill(pool.pid, second)
    assert pool.wait(20) == 0, processes.log(pool)
    assert statuses(sync_conn, ids) == [JobStatus.FAILED] * 2
    dead_and_deregistered(sync_conn, names)
    assert sync_conn.zcard(f'rq:wip:{QUEUE}') == 0


def test_burst_drains_the_queue_and_exits_0(sync_conn: redis.Redis, redis_url: str, processes: Processes) -> None:
    queue = rq.Queue(QUEUE, connection=sync_conn)
    jobs = [queue.enqueue(tasks.async_add, i, 1) for i in range(30)]
    pool = processes.start('pool', pool_command(redis_url, '-n', '2', '--burst'))
    assert pool.wait(60) == 0, processes.log(pool)
    assert [j.return_value() for j in jobs] == [i + 1 for i in range(30)]
    assert sync_conn.llen(f'rq:queue:{QUEUE}') == 0
    # Two workers were born (each its own record), neither was replaced, both registered death.
    names = [k.decode().removeprefix('rq:worker:') for k in sync_conn.scan_iter('rq:worker:*')]
    names = [n for n in names if ':' not in n]
    assert len(names) == 2, names
    dead_and_deregistered(sync_conn, names)
    assert processes.log(pool, tail=10**7).count('Worker pool: started worker') == 2


def test_a_killed_worker_is_replaced_and_its_job_recovered(
    sync_conn: redis.Redis, redis_url: str, processes: Processes
) -> None:
    """SIGKILL a child in the middle of a job (with a retry left): a new child takes its place
    (a new name: the dead one's record lives on until its TTL, as with rq), and once the job's
    heartbeat deadline has passed, maintenance hands the job to the retry, which the pool runs.

    Time travel as in tests/faults/test_sigkill.py: rather than wait the 60 s of the job's
    heartbeat deadline, its ``rq:wip`` score is set to the past after the kill."""
    pool = processes.start(
        'pool', pool_command(redis_url, '-n', '2', '--concurrency', '1', '--maintenance-interval', '1')
    )
    first = {w.name for w in until(lambda: live_workers(sync_conn, 2), pool, processes)}
    job = rq.Queue(QUEUE, connection=sync_conn).enqueue(tasks.slow_from_redis, retry=rq.Retry(max=1))
    # Started, and its function running (``started`` is written when a worker claims the job).
    until(lambda: sync_conn.lrange('ran', 0, -1) == [job.id.encode()], pool, processes)
    assert statuses(sync_conn, [job.id]) == [JobStatus.STARTED]
    victim = worker_names_of(sync_conn, [job.id])[0]
    victim_pid = int(sync_conn.hget(f'rq:worker:{victim}', 'pid') or 0)
    assert victim in first and victim_pid not in (0, pool.pid)

    os.kill(victim_pid, signal.SIGKILL)
    replaced = until(lambda: None if _alive(victim_pid) else live_workers(sync_conn, 2, {victim}), pool, processes)
    newcomer = {w.name for w in replaced} - first
    assert len(newcomer) == 1, (first, [w.name for w in replaced])
    sync_conn.set('sleep_seconds', 0)
    members = sync_conn.zrange(f'rq:wip:{QUEUE}', 0, -1)
    assert len(members) == 1
    sync_conn.zadd(f'rq:wip:{QUEUE}', {m: int(time.time()) - 1 for m in members}, xx=True)

    until(lambda: statuses(sync_conn, [job.id]) == [JobStatus.FINISHED], pool, processes)
    assert Counter(x.decode() for x in sync_conn.lrange('ran', 0, -1)) == {job.id: 2}
    assert RQJob.fetch(job.id, connection=sync_conn).retries_left == 0
    assert worker_names_of(sync_conn, [job.id])[0] != victim
    assert sync_conn.zcard(f'rq:wip:{QUEUE}') == 0

    os.kill(pool.pid, signal.SIGTERM)
    assert pool.wait(30) == 0, processes.log(pool)
    assert sync_conn.smembers('rq:workers') == {f'rq:worker:{victim}'.encode()}  # dead without a word
    for name in (first | newcomer) - {victim}:
        assert sync_conn.hget(f'rq:worker:{name}', 'death') is not None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_worker_that_quits_is_replaced(sync_conn: redis.Redis, redis_url: str, processes: Processes) -> None:
    """A child that quits on its own (after ``--max-jobs 2``, on rq's shutdown command, on a SIGTERM
    of its own) is replaced by a fresh one, under a new name."""
    pool = processes.start('pool', pool_command(redis_url, '-n', '1', '--max-jobs', '2', '--concurrency', '1'))
    queue = rq.Queue(QUEUE, connection=sync_conn)
    ids = [queue.enqueue(tasks.async_add, i, 1).id for i in range(4)]
    until(lambda: statuses(sync_conn, ids) == [JobStatus.FINISHED] * 4, pool, processes)
    by_worker = Counter(worker_names_of(sync_conn, ids))
    assert sorted(by_worker.values()) == [2, 2], by_worker
    seen = set(by_worker)

    third = until(lambda: live_workers(sync_conn, 1, seen), pool, processes)[0]
    send_shutdown_command(sync_conn, third.name)
    fourth = until(lambda: live_workers(sync_conn, 1, seen | {third.name}), pool, processes)[0]
    assert sync_conn.hget(f'rq:worker:{third.name}', 'death') is not None
    os.kill(fourth.pid, signal.SIGTERM)
    fifth = until(lambda: live_workers(sync_conn, 1, seen | {third.name, fourth.name}), pool, processes)[0]
    assert sync_conn.hget(f'rq:worker:{fourth.name}', 'death') is not None
    assert fifth.pid not in (third.pid, fourth.pid, pool.pid)

    os.kill(pool.pid, signal.SIGTERM)
    assert pool.wait(30) == 0, processes.log(pool)
    dead_and_deregistered(sync_conn, [fifth.name])


def test_a_broken_setup_is_retried_with_growing_delays(redis_url: str, processes: Processes) -> None:
    """Children that cannot start (nothing listens at the URL) are replaced after 0, 1, 2 … s, not in
    a loop; the pool stopped meanwhile exits 1 (its worker failed)."""
    dead = f'redis://127.0.0.1:{free_port()}/0'
    pool = processes.start('pool', pool_command(dead, '-n', '1'))
    until(lambda: 'replacing it in 2 s' in processes.log(pool), pool, processes)
    delays = re.findall(r'ended with status 1 after \S+ s; replacing it in (\d+) s', processes.log(pool))
    assert delays[:3] == ['0', '1', '2'], processes.log(pool)
    os.kill(pool.pid, signal.SIGTERM)
    assert pool.wait(20) == 1, processes.log(pool)


def test_burst_with_workers_that_fail_exits_1(processes: Processes) -> None:
    dead = f'redis://127.0.0.1:{free_port()}/0'
    pool = processes.start('pool', pool_command(dead, '-n', '2', '--burst'))
    assert pool.wait(30) == 1, processes.log(pool)
    log = processes.log(pool)
    assert log.count('Worker pool: started worker') == 2, log  # no replacement in burst mode
    assert log.count('aiorq worker: Redis error: ConnectionError') == 2, log


@pytest.mark.parametrize(
    ('args', 'option'),
    [
        (['-n', '0'], "'--num-workers' / '-n'"),
        (['-n', '2', '--metrics-port', '65535'], "'--metrics-port'"),
        (['--metrics-host', '0.0.0.0'], "'--metrics-host'"),
        (['-w', 'rq.worker.SimpleWorker'], "'--worker-class' / '-w'"),
        (['--serializer', 'no.such.serializer'], "'--serializer' / '-S'"),
        (['--url', 'nonsense://x'], "'--url' / '-u'"),
        (['q:intermediate'], "'[QUEUES]...'"),
    ],
)
def test_bad_options_are_one_usage_error(args: list[str], option: str) -> None:
    """Checked once by the pool before any worker starts: usage, one ``Error:`` line, exit 2."""
    result = CliRunner().invoke(main, ['worker-pool', *args])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith('Error: ')]
    assert len(errors) == 1 and f'Invalid value for {option}' in errors[0], result.output
    assert 'Traceback' not in result.output and 'started worker' not in result.output


def test_options_aiorq_worker_pool_does_not_take(redis_url: str) -> None:
    """``--max-idle-time`` would make a worker quit when idle, and the pool replace it at once."""
    result = CliRunner().invoke(main, ['worker-pool', '--url', redis_url, '--max-idle-time', '5'])
    # click 8.2: "No such option: --max-idle-time"; later: "No such option '--max-idle-time'".
    assert result.exit_code == 2 and re.search("No such option:? '?--max-idle-time", result.stderr), result.output


@pytest.mark.parametrize(
    ('args', 'message'),
    [
        (['-c', 'no_such_settings_mod'], "cannot import settings module 'no_such_settings_mod'"),
        (['--cron', '/nonexistent/cron_config.py'], '--cron: '),
    ],
)
def test_what_fails_after_parsing_is_one_line(args: list[str], message: str, redis_url: str) -> None:
    result = CliRunner().invoke(main, ['worker-pool', '--url', redis_url, *args])
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f'aiorq worker-pool: {message}'), result.output


def test_children_get_the_options_given_to_the_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the pool's command line gave, each child's command line gives (in ``aiorq worker``'s
    spelling, which its own parser reads back); defaults and the environment are left to the
    child, which has the same defaults and inherits the environment."""
    monkeypatch.setenv('RQ_CONFIG', 'settings_from_env')
    args = ['-n', '3', '-l', 'DEBUG', '-P', 'a', '-P', 'b', '--max-jobs', '5', '-s', '--cron', 'cron.py']
    args += ['--concurrency', '7', '--sync-jobs', 'process', '--metrics-port', '9100', '-ds', 'random', 'q1', 'q2']
    ctx = worker_pool.make_context('worker-pool', args)
    argv = child_command(ctx, ctx.params, 3, 'w-3')
    assert argv[:4] == [sys.executable, '-m', 'aiorq_worker', 'worker']
    assert 'settings_from_env' not in argv
    child = worker_command.make_context('worker', argv[4:]).params
    assert child['name'] == 'w-3' and child['queues'] == ('q1', 'q2')
    assert child['metrics_port'] == 9102  # child i: PORT + i - 1
    assert (child['logging_level'], child['path'], child['max_jobs']) == ('DEBUG', ('a', 'b'), 5)
    assert (child['with_scheduler'], child['cron_config'], child['concurrency']) == (True, 'cron.py', 7)
    assert (child['sync_jobs'], child['dequeue_strategy'], child['config']) == (
        'process',
        'random',
        'settings_from_env',
    )
    defaults = worker_command.make_context('worker', []).params
    for key in ('results_ttl', 'worker_ttl', 'burst', 'loop_name', 'metrics_host', 'job_monitoring_interval'):
        assert child[key] == defaults[key], key
