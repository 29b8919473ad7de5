"""What every part of ``benchmarks/suite.py`` shares: the measurement record, the worker commands
and processes (with their CPU, RSS and event loop), and the availability of each system."""

from __future__ import annotations

import asyncio
import importlib
import importlib.metadata
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import redis

HERE = Path(__file__).resolve().parent
QUEUE = 'bench'
SYSTEMS = ('aiorq', 'rq', 'arq', 'saq', 'streaq')
PEERS = ('arq', 'saq', 'streaq')  # the asyncio-native peers aiorq's targets are set against
LOOPS = ('asyncio', 'uvloop')
IN_FLIGHT = 100
CONCURRENCY = 100
BATCH = 500
WORKER_TIMEOUT = 600.0

T = TypeVar('T')


class RunError(Exception):
    """A run lost a job, got a wrong result or its worker crashed."""


@dataclass
class Measurement:
    case: str
    system: str
    round: int
    loop: str = ''  # the worker's event loop ('' for the client-only cases)
    variant: str = ''  # how a latency client waits, or which command a pool row runs
    version: str = ''
    status: str = 'ok'  # ok | FAILED | n/a | not installed
    note: str = ''
    n: int = 0
    concurrency: int | None = None
    workers: int | None = None
    rate: float | None = None
    seconds: float | None = None
    wall: float | None = None
    cpu_us_per_job: float | None = None
    cpu_s: float | None = None
    redis_cpu_us_per_job: float | None = None
    cmds_per_job: float | None = None
    rss_mb: float | None = None
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    ideal_fraction: float | None = None
    missed: int | None = None  # saq pub/sub: notifications the waiting client never got
    verified: int = 0


@dataclass
class Sizes:
    jobs: int
    io_jobs: int
    latency_jobs: int
    idle_jobs: int
    rounds: int


# ---------------------------------------------------------------------------------------------
# Systems and loops


_IMPORT_ERRORS: dict[str, str | None] = {}


def import_error(module: str) -> str | None:
    """None when ``module`` imports, else why not (saq 0.26 forgets to declare typing_extensions,
    streaQ needs Python 3.11)."""
    if module not in _IMPORT_ERRORS:
        try:
            importlib.import_module(module)
            _IMPORT_ERRORS[module] = None
        except ImportError as exc:
            _IMPORT_ERRORS[module] = f'{type(exc).__name__}: {exc}'
    return _IMPORT_ERRORS[module]


def installed(system: str) -> bool:
    return import_error(system) is None


def version_of(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return ''


def run_on(loop: str, main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """``main()`` run to completion on a new event loop of the kind ``loop`` names."""
    if loop == 'uvloop':
        import uvloop

        return uvloop.run(main())
    return asyncio.run(main())


@cache
def pool_help() -> str | None:
    """``aiorq worker-pool --help`` (the options the pool command takes), None if there is none."""
    done = subprocess.run(
        [sys.executable, '-m', 'aiorq_worker', 'worker-pool', '--help'],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.stdout if done.returncode == 0 else None


# ---------------------------------------------------------------------------------------------
# Worker processes


def worker_command(system: str, url: str, kind: str, concurrency: int, burst: bool, loop: str) -> list[str]:
    """The command line of one worker process of ``system`` on event loop ``loop``."""
    common = ['--url', url, '--path', str(HERE), '--logging_level', 'WARNING']
    if burst:
        common.insert(0, '--burst')
    if system == 'rq':
        return [sys.executable, '-m', 'rq.cli', 'worker', *common, '-w', 'rq.worker.SimpleWorker', QUEUE]
    if system == 'aiorq':
        return [
            sys.executable, '-m', 'aiorq_worker', 'worker', *common,
            '--concurrency', str(concurrency), '--loop', loop, QUEUE,
        ]  # fmt: skip
    cmd = [sys.executable, str(HERE / 'suite_worker.py'), system, '--url', url, '--queue', QUEUE]
    cmd += ['--kind', kind, '--concurrency', str(concurrency), '--loop', loop]
    return cmd + (['--burst'] if burst else [])


def pool_command(url: str, processes: int, concurrency: int, loop: str) -> list[str]:
    """``aiorq worker-pool -n N --burst --concurrency C QUEUE --url URL`` (the documented CLI),
    plus ``--path``, ``--loop`` and the logging level where the command lists them."""
    cmd = [sys.executable, '-m', 'aiorq_worker', 'worker-pool', '-n', str(processes), '--burst']
    cmd += ['--concurrency', str(concurrency), '--url', url]
    usage = pool_help() or ''
    if '--path' in usage:
        cmd += ['--path', str(HERE)]
    if '--loop' in usage:
        cmd += ['--loop', loop]
    for spelling in ('--logging_level', '--logging-level'):
        if spelling in usage:
            cmd += [spelling, 'WARNING']
            break
    return cmd + [QUEUE]


@dataclass
class Exited:
    returncode: int
    wall: float
    cpu_s: float
    rss_mb: float
    stderr: str


class WorkerProcess:
    """A worker subprocess whose CPU (its own and its reaped children's) and peak RSS are read with
    ``os.wait4`` when it exits."""

    def __init__(self, cmd: list[str]) -> None:
        self.stderr_file = tempfile.TemporaryFile(mode='w+')
        self.began = time.monotonic()
        # The job functions are importable in the worker's own children too (worker-pool).
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(HERE), os.environ.get('PYTHONPATH')])))
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self.stderr_file, env=env)
        # wait4's ru_maxrss is useless here: Linux carries the parent's peak RSS over the fork/exec
        # into the child's, so the peak is sampled from /proc/PID/status (VmHWM, after the exec).
        self.hwm_kb = 0
        self.sampler = threading.Thread(target=self._sample_hwm, daemon=True)
        self.sampler.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _sample_hwm(self) -> None:
        path = f'/proc/{self.proc.pid}/status'
        while self.proc.returncode is None:
            try:
                with open(path) as f:
                    for line in f:
                        if line.startswith('VmHWM:'):
                            self.hwm_kb = max(self.hwm_kb, int(line.split()[1]))
                            break
            except (OSError, ValueError):
                return
            time.sleep(0.02)

    def wait(self, timeout: float = WORKER_TIMEOUT) -> Exited:
        timer = threading.Timer(timeout, os.kill, (self.proc.pid, signal.SIGKILL))  # not Popen.kill: see stop
        timer.start()
        try:
            _, status, usage = os.wait4(self.proc.pid, 0)
        finally:
            timer.cancel()
        wall = time.monotonic() - self.began
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        self.sampler.join()
        self.stderr_file.seek(0)
        err = self.stderr_file.read()
        self.stderr_file.close()
        return Exited(self.proc.returncode, wall, usage.ru_utime + usage.ru_stime, self.hwm_kb / 1024, err)

    def stop(self, grace: float = 15.0) -> Exited:
        # os.kill, not Popen.send_signal: that polls first and so reaps an exited worker, whose
        # CPU wait4 could then no longer read. Unreaped, the pid cannot have been reused.
        if self.proc.returncode is None:
            os.kill(self.proc.pid, signal.SIGTERM)
        return self.wait(grace)


def redis_snapshot(conn: redis.Redis) -> tuple[float, int]:
    info = conn.info('all')
    return float(info['used_cpu_user']) + float(info['used_cpu_sys']), int(info['total_commands_processed'])


async def gather_limited(n: int, one: Callable[[int], Awaitable[Any]], limit: int = IN_FLIGHT) -> list[Any]:
    sem = asyncio.Semaphore(limit)

    async def guarded(i: int) -> Any:
        async with sem:
            return await one(i)

    return list(await asyncio.gather(*(guarded(i) for i in range(n))))
