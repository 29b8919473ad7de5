"""``aiorq cron`` and ``CronRunner``: rq's cron configs, enqueued once per tick however many
runners share them, readable by stock rq, beside a stock ``rq cron``; bad input refused.

Each promise has one real-time test (processes, real seconds, ``interval=1``); the cron-time
logic is steered by calling ``tick(now=...)`` instead of waiting for a minute to pass.
"""

from __future__ import annotations

import asyncio
import logging
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import redis
import rq
import rq.cron
import tasks
from click.testing import CliRunner
from processes import Processes
from redis.asyncio import Redis
from redis_server import free_port
from rq.job import Job as RQJob
from rq.job import JobStatus

from aiorq.protocol import cron as pc
from aiorq_worker.cli import main
from aiorq_worker.cron import CronConfigError, CronRunner

ROOT = Path(__file__).resolve().parents[2]
ADD_EVERY_SECOND = """
from rq import cron

import tasks

cron.register(tasks.add, 'q', args=(1, 2), interval=1)
"""
EVERY_MINUTE = "from rq import cron\nimport tasks\ncron.register(tasks.add, 'q', cron='* * * * *')\n"
HISTORY = rq.cron.get_cron_job_history_key('tasks.add')
SCHEDULERS = rq.cron_scheduler_registry.get_registry_key()


def write_config(tmp_path: Path, text: str, name: str = 'cron_config.py') -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def aiorq_cron(url: str, *args: str) -> list[str]:
    return [sys.executable, '-m', 'aiorq_worker', 'cron', '--url', url, *args]


def wait_until(predicate: Callable[[], bool], processes: Processes, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, processes.logs()
        time.sleep(0.05)


def stamps(conn: redis.Redis, key: str = HISTORY) -> list[float]:
    return [score for _, score in conn.zrange(key, 0, -1, withscores=True)]


def run_stock_worker(conn: redis.Redis, queue: str = 'q') -> None:
    rq.SimpleWorker([rq.Queue(queue, connection=conn)], connection=conn).work(burst=True, logging_level='WARNING')


# -- the real thing ----------------------------------------------------------------------------


async def test_cli_enqueues_every_second_for_a_stock_worker(
    tmp_path: Path, redis_url: str, sync_conn: redis.Redis, processes: Processes
) -> None:
    """``aiorq cron CONFIG`` with ``interval=1``: a job per second, stock rq runs them all;
    SIGTERM stops it cleanly and registers its death."""
    config = write_config(tmp_path, ADD_EVERY_SECOND)
    proc = processes.start('aiorq-cron', aiorq_cron(redis_url, '--name', 'cli-runner', config))
    wait_until(lambda: sync_conn.zscore(SCHEDULERS, 'cli-runner') is not None, processes)
    wait_until(lambda: sync_conn.zcard(HISTORY) >= 3, processes)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0, processes.log(proc)
    assert sync_conn.zscore(SCHEDULERS, 'cli-runner') is None  # death
    assert sync_conn.ttl(rq.cron.CronScheduler.fetch('cli-runner', sync_conn).key) > 0  # left to expire

    ids = rq.cron.get_cron_job_ids('tasks.add', sync_conn)
    queue = rq.Queue('q', connection=sync_conn)
    assert sorted(ids) == sorted(queue.job_ids) and len(ids) >= 3
    times = stamps(sync_conn)
    assert all(b - a >= 1 for a, b in zip(times, times[1:])), times
    run_stock_worker(sync_conn)
    for job in RQJob.fetch_many(ids, connection=sync_conn):
        assert job is not None and job.get_status() == JobStatus.FINISHED and job.return_value() == 3
    log = processes.log(proc)
    assert 'Enqueued job add to queue q' in log and 'registering death' in log, log


async def test_two_cli_runners_never_double_enqueue(
    tmp_path: Path, redis_url: str, sync_conn: redis.Redis, processes: Processes
) -> None:
    """Two ``aiorq cron`` on one config for a few real seconds: one job per tick, while both
    try every tick (the one that comes second logs that it found the tick taken)."""
    config = write_config(tmp_path, ADD_EVERY_SECOND)
    procs = [processes.start(n, aiorq_cron(redis_url, '-l', 'DEBUG', '--name', n, config)) for n in ('a', 'b')]
    wait_until(lambda: sync_conn.zcard(SCHEDULERS) == 2, processes)
    began = time.time()
    wait_until(lambda: time.time() - began > 3.5, processes)
    alive = [s.name for s in rq.cron.CronScheduler.all(sync_conn)]
    processes.stop_all()
    elapsed = time.time() - began

    times = stamps(sync_conn)
    assert all(b - a >= 1 for a, b in zip(times, times[1:])), f'a tick enqueued twice: {times}'
    in_window = [t for t in times if t >= began]
    assert 3 <= len(in_window) <= elapsed + 1, (times, elapsed)
    assert sync_conn.llen('rq:queue:q') == len(times)
    assert sorted(alive) == ['a', 'b']
    logs = [processes.procs[p.pid][3].read_text() for p in procs]  # the whole logs, after the stop
    enqueued = sum(log.count('Enqueued job add') for log in logs)
    assert enqueued == len(times), logs
    assert sum(log.count('this tick was already enqueued') for log in logs) >= 2, logs


async def test_beside_stock_rq_cron(
    tmp_path: Path, redis_url: str, sync_conn: redis.Redis, conn: Redis, processes: Processes
) -> None:
    """An aiorq runner, then a stock ``rq cron`` (no lock), on one config, ``interval=1``: stock
    enqueues on its own clock (its first run right after aiorq's tick: the documented double);
    aiorq enqueues only when the last enqueue recorded by anyone is at least 1 s old. Stock's data
    stays readable by stock rq (its readers, ``rq info``, its worker)."""
    config = write_config(tmp_path, ADD_EVERY_SECOND)
    runner = CronRunner(conn, config, name='aiorq-runner')
    mine: dict[str, float] = {}
    tick = runner.tick

    async def recording_tick(now: datetime | None = None) -> list[Any]:
        done = await tick(now)
        mine.update((d.job_id, sync_conn.zscore(HISTORY, d.job_id) or 0.0) for d in done)
        return done

    runner.tick = recording_tick  # type: ignore[method-assign]
    stop = asyncio.Event()
    task = asyncio.ensure_future(runner.run(stop))
    while not mine:
        await asyncio.sleep(0.05)
    processes.start('stock-cron', [sys.executable, '-m', 'rq.cli', 'cron', '--url', redis_url, config])
    while sync_conn.zcard(SCHEDULERS) < 2:
        assert not task.done() and time.time() - next(iter(mine.values())) < 15, processes.logs()
        await asyncio.sleep(0.05)
    await asyncio.sleep(3)
    schedulers = {s.name: s for s in rq.cron.CronScheduler.all(sync_conn)}
    stop.set()
    await task
    processes.stop_all()

    assert len(schedulers) == 2 and 'aiorq-runner' in schedulers
    [stock_name] = set(schedulers) - {'aiorq-runner'}
    [stock_job] = schedulers[stock_name].get_jobs()
    assert (stock_job.name, stock_job.interval) == ('tasks.add', 1) and stock_job.latest_enqueue_time is not None
    history = [(m.decode(), score) for m, score in sync_conn.zrange(HISTORY, 0, -1, withscores=True)]
    for stamp in mine.values():
        # Stock takes its timestamp before its MULTI, without WATCH: a record still in flight
        # when aiorq read the score can land a moment before aiorq's. Those are stock's doubles.
        before = [t for j, t in history if t < stamp and not (j not in mine and stamp - t < 0.05)]
        assert not before or stamp - before[-1] >= 1, f'aiorq enqueued {stamp - before[-1]:.3f} s after another'
    stock = [j for j, _ in history if j not in mine]
    assert len(stock) >= 3, 'stock rq cron enqueues every second whatever aiorq does'
    info = subprocess.run(
        [sys.executable, '-m', 'rq.cli', 'info', '--url', redis_url, 'q'], capture_output=True, text=True, timeout=30
    )
    assert info.returncode == 0 and re.search(rf'q\s+\|\S*\s+{len(history)}\b', info.stdout), info.stdout
    run_stock_worker(sync_conn)
    jobs = RQJob.fetch_many([j for j, _ in history], connection=sync_conn)
    assert all(j is not None and j.return_value() == 3 for j in jobs)


# -- steering the clock ------------------------------------------------------------------------


async def test_cron_expression_steered(tmp_path: Path, conn: Redis, sync_conn: redis.Redis) -> None:
    """``cron='* * * * *'``: nothing before the minute, one job at it, the next minute after;
    rq's ``CronJob`` computes the times (same as a stock one fed the same enqueue time)."""
    config = write_config(tmp_path, EVERY_MINUTE)
    runner = CronRunner(conn, config)
    await runner.start()
    [cron_job] = runner.cron_jobs
    minute = cron_job.next_enqueue_time
    assert minute is not None and minute.second == 0 and minute > datetime.now(timezone.utc)
    assert runner.sleep_interval(now=minute - timedelta(seconds=10)) == pytest.approx(10)
    assert await runner.tick(now=minute - timedelta(seconds=1)) == []
    [done] = await runner.tick(now=minute + timedelta(seconds=2))
    assert cron_job.latest_enqueue_time == minute + timedelta(seconds=2)
    assert cron_job.next_enqueue_time == minute + timedelta(minutes=1)
    assert await runner.tick(now=minute + timedelta(seconds=30)) == []
    assert runner.sleep_interval(now=minute + timedelta(seconds=30)) == pytest.approx(30)
    assert rq.Queue('q', connection=sync_conn).job_ids == [done.job_id]

    stock = rq.cron.CronJob('q', func=tasks.add, cron='* * * * *')
    stock.set_enqueue_time(minute + timedelta(seconds=2))
    assert stock.next_enqueue_time == cron_job.next_enqueue_time
    record = rq.cron.CronScheduler.fetch(runner.name, sync_conn).get_jobs()[0]
    assert record.next_enqueue_time == cron_job.next_enqueue_time


async def test_cron_tick_enqueued_once_by_two_runners(
    tmp_path: Path, redis_server: Any, sync_conn: redis.Redis
) -> None:
    """The guard for cron times: whoever is second finds the tick recorded and skips it."""
    config = write_config(tmp_path, EVERY_MINUTE)
    clients = [Redis.from_url(redis_server.url(0)) for _ in range(2)]
    try:
        runners = [CronRunner(c, config) for c in clients]
        moment = datetime.now(timezone.utc)
        for r in runners:
            await r.start()
            r.cron_jobs[0].set_enqueue_time(moment - timedelta(minutes=3))  # a due tick, in the past
        tick = runners[0].cron_jobs[0].next_enqueue_time
        assert tick is not None and tick < moment
        first = await runners[0].tick(now=moment)
        second = await runners[1].tick(now=moment)
        assert len(first) == 1 and second == []
        assert [r.cron_jobs[0].next_enqueue_time for r in runners] == [runners[0].cron_jobs[0].next_enqueue_time] * 2
        [loser] = rq.cron.CronScheduler.fetch(runners[1].name, sync_conn).get_jobs()  # its record follows
        assert loser.next_enqueue_time == runners[1].cron_jobs[0].next_enqueue_time
        assert sync_conn.llen('rq:queue:q') == 1
    finally:
        for c in clients:
            await c.aclose()


async def test_guard_is_atomic_under_contention(redis_server: Any, sync_conn: redis.Redis) -> None:
    """Twenty concurrent enqueues of one tick on twenty connections: one wins."""
    cron_job = rq.cron.CronJob('q', func=tasks.add, args=(1, 2), interval=60)
    clients = [Redis.from_url(redis_server.url(0)) for _ in range(20)]
    try:
        tick = time.time() - 1
        results = await asyncio.gather(
            *(pc.enqueue_due(c, 'tasks.add', [(pc.build_job(cron_job), 'q', tick)]) for c in clients)
        )
    finally:
        for c in clients:
            await c.aclose()
    assert sum(len(jobs) for jobs, _ in results) == 1
    assert sync_conn.llen('rq:queue:q') == 1 and sync_conn.zcard(HISTORY) == 1


async def test_names_shared_by_registrations(tmp_path: Path, conn: Redis, sync_conn: redis.Redis) -> None:
    """Registrations sharing a name are enqueued together on their interval grid, once per slot
    across runners (rq's data cannot tell their enqueues apart)."""
    config = write_config(
        tmp_path,
        'from rq import cron\nimport tasks\n'
        "cron.register(tasks.add, 'q', args=(1, 2), interval=10)\n"
        "cron.register(tasks.add, 'q', args=(3, 4), interval=10)\n",
    )
    a, b = CronRunner(conn, config), CronRunner(conn, config)
    await a.start()
    await b.start()
    moment = datetime.now(timezone.utc)
    assert len(await a.tick(now=moment)) == 2
    assert await b.tick(now=moment) == [] and await a.tick(now=moment) == []
    slot = a.cron_jobs[0].next_enqueue_time
    assert slot is not None and slot.timestamp() % 10 == 0 and slot > moment
    assert b.cron_jobs[0].next_enqueue_time == slot
    assert sync_conn.llen('rq:queue:q') == 2


async def test_restart_does_not_repeat_the_tick(tmp_path: Path, conn: Redis, sync_conn: redis.Redis) -> None:
    """A runner starting after an enqueue of its interval job waits for that enqueue + interval
    (stock ``rq cron`` would enqueue again at once)."""
    config = write_config(tmp_path, ADD_EVERY_SECOND.replace('interval=1', 'interval=60'))
    first = CronRunner(conn, config)
    await first.start()
    assert len(await first.tick()) == 1
    await first.shutdown()
    again = CronRunner(conn, config)
    await again.start()
    assert await again.tick() == []
    [stamp] = stamps(sync_conn)
    assert again.cron_jobs[0].next_enqueue_time == datetime.fromtimestamp(stamp + 60, timezone.utc)
    assert 59 < again.sleep_interval() <= 60


async def test_one_failing_job_does_not_stop_the_others(
    tmp_path: Path, conn: Redis, sync_conn: redis.Redis, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    config = write_config(
        tmp_path,
        'from rq import cron\nimport tasks\n'
        "cron.register(tasks.add, 'q', args=(1, 2), interval=60)\n"
        "cron.register(tasks.summator, 'q', args=(1, 2), interval=60)\n",
    )
    runner = CronRunner(conn, config)
    await runner.start()
    build = pc.build_job

    def broken(cron_job: rq.cron.CronJob) -> RQJob:
        if cron_job.name == 'tasks.summator':
            raise ConnectionError('simulated failure')
        return build(cron_job)

    monkeypatch.setattr(pc, 'build_job', broken)
    moment = datetime.now(timezone.utc)
    with caplog.at_level(logging.ERROR, logger='aiorq.cron'):
        done = await runner.tick(now=moment)
    assert [d.cron_job.name for d in done] == ['tasks.add']
    assert 'Could not enqueue cron job tasks.summator (retrying in 1 s): ConnectionError: simulated failure' in (
        caplog.text
    )
    assert runner.sleep_interval(now=moment) == pytest.approx(1)
    monkeypatch.setattr(pc, 'build_job', build)
    assert await runner.tick(now=moment + timedelta(seconds=0.5)) == []
    [retried] = await runner.tick(now=moment + timedelta(seconds=1))
    assert retried.cron_job.name == 'tasks.summator'


# -- the documented example --------------------------------------------------------------------


def test_docs_show_the_example() -> None:
    doc = (ROOT / 'docs' / 'cron.md').read_text()
    blocks = re.findall(r'```python\n(.*?)```', doc, re.S)
    # The page includes the file itself (pymdownx.snippets), so it shows what this suite runs.
    assert [b.strip() for b in blocks] == ['--8<-- "examples/cron_config.py"']
    assert (ROOT / 'examples' / 'cron_config.py').is_file()


async def test_example_config(conn: Redis, sync_conn: redis.Redis, redis_url: str, processes: Processes) -> None:
    """examples/cron_config.py, by module name: the interval job at once, the daily coroutine
    job at 03:30 local time; a stock worker runs both."""
    runner = CronRunner(conn, 'cron_config')
    await runner.start()
    [now_job] = await runner.tick()
    daily = next(cj for cj in runner.cron_jobs if cj.cron)
    at = daily.next_enqueue_time
    assert at is not None and at.astimezone().strftime('%H:%M') == '03:30'
    [daily_job] = [d for d in await runner.tick(now=at) if d.cron_job is daily]  # the other is due too
    proc = processes.start(
        'stock-worker',
        [sys.executable, '-m', 'rq.cli', 'worker', '--burst', '-w', 'rq.worker.SimpleWorker', '-u', redis_url]
        + ['my_queue'],
    )
    assert proc.wait(30) == 0, processes.log(proc)
    results = [RQJob.fetch(j.job_id, connection=sync_conn).return_value() for j in (now_job, daily_job)]
    assert results == [3, 7]


# -- bad input ---------------------------------------------------------------------------------

BAD = {
    'missing-file': (None, "Configuration file not found at '{path}'"),
    'syntax-error': ('cron.register(', "cannot load cron config '{path}': SyntaxError"),
    'missing-function': (
        'from rq import cron\nfrom tasks import no_such_function\n',
        "ImportError: cannot import name 'no_such_function' from 'tasks'",
    ),
    'bad-cron-expression': (
        "from rq import cron\nimport tasks\ncron.register(tasks.add, 'q', cron='61 * * * *')\n",
        "cron job tasks.add in '{path}': [61 * * * *] is not acceptable",
    ),
    'interval-and-cron': (
        "from rq import cron\nimport tasks\ncron.register(tasks.add, 'q', interval=5, cron='* * * * *')\n",
        'Cannot specify both interval and cron parameters',
    ),
    'function-in-config': (
        "from rq import cron\ndef here():\n    pass\ncron.register(here, 'q', interval=5)\n",
        'the function is defined in the config file, which workers cannot import',
    ),
    'unpicklable-argument': (
        "from rq import cron\nimport tasks\ncron.register(tasks.echo, 'q', args=(lambda: 1,), interval=5)\n",
        "cron job tasks.echo in '{path}':",
    ),
}


@pytest.mark.parametrize('case', sorted(BAD))
def test_bad_config_one_line_and_exit_1(case: str, tmp_path: Path) -> None:
    text, expected = BAD[case]
    path = str(tmp_path / f'{case.replace("-", "_")}.py')
    if text is not None:
        Path(path).write_text(text)
    with pytest.raises(CronConfigError):
        CronRunner(Redis(), path).load()
    result = CliRunner().invoke(main, ['cron', '--url', 'redis://127.0.0.1:1/0', path])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('aiorq cron: '), result.output
    assert expected.format(path=path) in lines[0], lines[0]


def test_bad_module_name_and_verbose_traceback(tmp_path: Path) -> None:
    """A dotted name that does not import; ``--verbose`` adds the traceback."""
    result = CliRunner().invoke(main, ['cron', '--url', 'redis://127.0.0.1:1/0', 'no_such_pkg.cron_config'])
    assert result.exit_code == 1
    assert result.output.strip() == (
        "aiorq cron: cannot import cron config 'no_such_pkg.cron_config' (from 'no_such_pkg.cron_config'): "
        "ModuleNotFoundError: No module named 'no_such_pkg'"
    )
    verbose = CliRunner().invoke(main, ['cron', '--verbose', '--url', 'redis://127.0.0.1:1/0', 'no_such_pkg.x'])
    assert verbose.exit_code == 1 and isinstance(verbose.exception, CronConfigError)


def test_unreachable_redis(tmp_path: Path, processes: Processes) -> None:
    """The real command line: a good config, no Redis there: one line, exit 1."""
    config = write_config(tmp_path, ADD_EVERY_SECOND)
    proc = processes.start('no-redis', aiorq_cron(f'redis://127.0.0.1:{free_port()}/0', config))
    assert proc.wait(30) == 1
    lines = [line for line in processes.log(proc).splitlines() if 'aiorq cron:' in line or 'Traceback' in line]
    assert len(lines) == 1 and lines[0].startswith('aiorq cron: Redis error: ConnectionError'), processes.log(proc)


# -- cron hosted by a worker (``aiorq worker --cron``) ---------------------------------------


def aiorq_worker(url: str, *args: str) -> list[str]:
    return [sys.executable, '-m', 'aiorq_worker', 'worker', '--url', url, *args, 'q']


async def test_worker_hosts_cron(tmp_path: Path, redis_url: str, sync_conn: redis.Redis, processes: Processes) -> None:
    """Two workers with ``--cron`` on one config: the jobs run, each tick enqueued once, and each
    worker's cron scheduler record is visible to stock rq, then gone from the registry at exit."""
    config = write_config(tmp_path, ADD_EVERY_SECOND)
    workers = [
        processes.start(f'w{i}', aiorq_worker(redis_url, '--cron', config, '-P', str(ROOT / 'tests'))) for i in range(2)
    ]
    wait_until(lambda: len(stamps(sync_conn)) >= 3, processes)
    assert len(rq.cron.CronScheduler.all(sync_conn)) == 2
    for proc in workers:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0, processes.log(proc)
    ids = [m.decode() for m in sync_conn.zrange(HISTORY, 0, -1)]
    enqueued = stamps(sync_conn)
    assert all(b - a >= 0.99 for a, b in zip(enqueued, enqueued[1:])), enqueued
    jobs = RQJob.fetch_many(ids, connection=sync_conn)
    assert all(j is not None and j.get_status() == JobStatus.FINISHED and j.return_value() == 3 for j in jobs)
    assert sync_conn.zcard(SCHEDULERS) == 0


def test_worker_refuses_a_bad_cron_config(tmp_path: Path, redis_url: str) -> None:
    config = write_config(
        tmp_path, "from rq import cron\nimport tasks\ncron.register(tasks.add, 'q', cron='not a cron')\n"
    )
    done = subprocess.run(
        aiorq_worker(redis_url, '--cron', config, '-P', str(ROOT / 'tests')), capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('aiorq worker: --cron:'), done.stderr
    assert 'Traceback' not in done.stderr
