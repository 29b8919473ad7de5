"""Every ``aiorq`` command fails like a command line tool: bad option values are click usage
errors (exit 2), what goes wrong afterwards is one line on stderr (exit 1), and a traceback
only with ``--verbose``. rq's class options are used where aiorq can use them and refused in
one line where it cannot, never ignored."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import cli_page
import pytest
from click.testing import CliRunner, Result
from redis.exceptions import ConnectionError as RedisConnectionError
from redis_server import free_port

from aiorq_worker.cli import main

CRON_CONFIG = "from rq import cron\nimport tasks\ncron.register(tasks.add, 'q', args=(1, 2), interval=60)\n"


@pytest.fixture
def dead_url() -> str:
    """A Redis URL with nothing listening."""
    return f'redis://127.0.0.1:{free_port()}/0'


@pytest.fixture
def cron_config(tmp_path: Path) -> str:
    path = tmp_path / 'cli_cron_config.py'
    path.write_text(CRON_CONFIG)
    return str(path)


def invoke(args: list[str], env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, args, env=env)


def command(name: str, url: str, cron_config: str, *args: str) -> list[str]:
    """``aiorq <name>`` with ``args``; cron needs its config path last."""
    extra = [cron_config] if name == 'cron' else []
    loop = ['--loop', 'asyncio'] if name == 'worker' else []
    return [name, '--url', url, *loop, *args, *extra]


def one_line(result: Result, prefix: str) -> str:
    """The single line the command wrote to stderr, checked to start with ``prefix``."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(prefix), result.output
    assert 'Traceback' not in result.output
    return lines[0]


def usage_error(result: Result, option: str) -> str:
    assert result.exit_code == 2, result.output
    assert 'Traceback' not in result.output
    error = [line for line in result.stderr.splitlines() if line.startswith('Error: ')]
    assert len(error) == 1 and f"Invalid value for '{option}'" in error[0], result.output
    return error[0]


@pytest.mark.parametrize('name', ['worker', 'cron', 'info'])
def test_unreachable_redis_is_one_line(name: str, dead_url: str, cron_config: str) -> None:
    result = invoke(command(name, dead_url, cron_config))
    assert result.exit_code == 1
    one_line(result, f'aiorq {name}: Redis error: ConnectionError: ')


@pytest.mark.parametrize('name', ['worker', 'cron', 'info'])
def test_verbose_shows_the_traceback(name: str, dead_url: str, cron_config: str) -> None:
    result = invoke(command(name, dead_url, cron_config, '--verbose'))
    assert result.exit_code == 1
    assert isinstance(result.exception, RedisConnectionError)


@pytest.mark.parametrize('name', ['worker', 'cron', 'info'])
def test_unimportable_settings_module(name: str, dead_url: str, cron_config: str) -> None:
    args = command(name, dead_url, cron_config, '-c', 'no_such_settings_mod', '-P', '/nonexistent')
    if name == 'info':
        args.remove('--url')  # as rq info, the settings module is read only to find Redis
        args.remove(dead_url)
    result = invoke(args)
    assert result.exit_code == 1
    line = one_line(result, f"aiorq {name}: cannot import settings module 'no_such_settings_mod': ")
    assert line.endswith("ModuleNotFoundError: No module named 'no_such_settings_mod'")


def test_settings_module_that_raises(dead_url: str, cron_config: str, tmp_path: Path) -> None:
    (tmp_path / 'broken_settings.py').write_text('REDIS_URL = undefined_name\n')
    result = invoke(command('worker', dead_url, cron_config, '-c', 'broken_settings', '-P', str(tmp_path)))
    assert result.exit_code == 1
    one_line(result, "aiorq worker: cannot import settings module 'broken_settings': NameError: ")
    result = invoke(['info', '-c', 'broken_settings', '-P', str(tmp_path), '--verbose'])
    assert result.exit_code == 1 and isinstance(result.exception, NameError)


@pytest.mark.parametrize(
    'option, value, message',
    [
        ('--concurrency', '0', '0 is not in the range x>=1'),
        ('--concurrency', 'many', "'many' is not a valid integer"),
        ('--maintenance-interval', '0', '0 is not in the range x>=1'),
        ('--job-monitoring-interval', '-1', '-1 is not in the range x>=1'),
        ('--exception-handler', 'no_such_mod.handler', "No module named 'no_such_mod'"),
        ('--serializer', 'no_such_mod.Serializer', "No module named 'no_such_mod'"),
        ('--url', 'nosuch://x', 'Redis URL must specify one of the following schemes'),
        # rq runs one job with --max-jobs 0 or -1; aiorq says the value makes no sense.
        ('--max-jobs', '-1', '-1 is not in the range x>=1'),
        ('--max-jobs', '0', '0 is not in the range x>=1'),
        ('--max-idle-time', '-1', '-1 is not in the range x>=1'),
        ('--max-idle-time', '0', '0 is not in the range x>=1'),
        ('--worker-ttl', '0', '0 is not in the range x>=1'),
        ('--metrics-port', '99999', '99999 is not in the range 1<=x<=65535'),
        ('--metrics-port', '0', '0 is not in the range 1<=x<=65535'),
        ('--metrics-host', '0.0.0.0', 'serves nothing without --metrics-port'),
    ],
)
def test_bad_worker_option_values_are_usage_errors(option: str, value: str, message: str, dead_url: str) -> None:
    result = invoke(['worker', '--url', dead_url, option, value])
    assert message in usage_error(result, option)


@pytest.mark.parametrize(
    'name, why',
    [
        ('x:intermediate', "its key rq:queue:x:intermediate is rq's intermediate list of queue 'x'"),
        (
            'q:intermediate:first_seen:ab',
            "its key rq:queue:q:intermediate:first_seen:ab has the shape of rq's stuck-job",
        ),
        ('_compact:1', "its key rq:queue:_compact:1 has the shape of rq's temporary list for compacting a queue"),
    ],
)
def test_worker_refuses_reserved_queue_names(name: str, why: str, dead_url: str, tmp_path: Path) -> None:
    """A queue whose list key is one of rq's own keys: a usage error as an argument, one line
    (exit 1) from the settings module's QUEUES; refused before Redis is reached."""
    error = usage_error(invoke(['worker', '--url', dead_url, 'default', name]), '[QUEUES]...')
    assert f'queue name {name!r} is reserved: {why}' in error
    module = f'reserved_settings_{uuid.uuid4().hex}'  # one per case: imported modules are cached
    (tmp_path / f'{module}.py').write_text(f'QUEUES = ["default", {name!r}]\n')
    result = invoke(['worker', '--url', dead_url, '-c', module, '-P', str(tmp_path)])
    assert result.exit_code == 1
    assert why in one_line(result, f'aiorq worker: QUEUES: queue name {name!r} is reserved: its key ')


def test_real_command_line(dead_url: str) -> None:
    """The installed entry point: no traceback, one line, exit 1; a usage error exits 2."""
    cmd = [sys.executable, '-m', 'aiorq_worker', 'worker']
    done = subprocess.run([*cmd, '--url', dead_url], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip().startswith('aiorq worker: Redis error: ConnectionError: '), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    done = subprocess.run([*cmd, '--url', dead_url, '--concurrency', '0'], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and 'Traceback' not in done.stderr
    assert "Invalid value for '--concurrency': 0 is not in the range x>=1." in done.stderr


# -- rq's class options ------------------------------------------------------------------


@pytest.mark.parametrize(
    'value, message',
    [
        ('rq.worker.SimpleWorker', "'rq.worker.SimpleWorker' is stock rq's worker: run it with `rq worker`"),
        ('rq.Worker', "'rq.Worker' is stock rq's worker: run it with `rq worker`"),
        ('no_such_mod.Worker', "cannot import 'no_such_mod.Worker': ModuleNotFoundError"),
        ('aiorq.NoSuchWorker', "cannot import 'aiorq.NoSuchWorker'"),
        ('aiorq.Job', "'aiorq.Job' is not a subclass of aiorq_worker.Worker"),
        ('cli_jobs.fail', "'cli_jobs.fail' is not a class"),
    ],
)
def test_worker_refuses_worker_classes_it_cannot_run(value: str, message: str, dead_url: str) -> None:
    assert message in usage_error(invoke(['worker', '--url', dead_url, '-w', value]), '--worker-class')


def test_class_from_the_environment_is_named(dead_url: str) -> None:
    result = invoke(['worker', '--url', dead_url], env={'RQ_WORKER_CLASS': 'rq.worker.SimpleWorker'})
    assert usage_error(result, '--worker-class').endswith('(from $RQ_WORKER_CLASS)')
    result = invoke(['worker', '--url', dead_url], env={'RQ_JOB_CLASS': 'cli_jobs.StockJob'})
    assert 'is a stock rq class' in usage_error(result, '--job-class')


@pytest.mark.parametrize(
    'option, value, message',
    [
        (
            '--job-class',
            'cli_jobs.StockJob',
            'is a stock rq class, which aiorq does not use: give a subclass of aiorq.Job',
        ),
        ('--job-class', 'cli_jobs.MyQueue', 'is not a subclass of aiorq.Job'),
        ('--queue-class', 'cli_jobs.MyQueue', 'has no effect here: aiorq worker takes jobs through its protocol layer'),
        ('--queue-class', 'rq.queue.Queue', None),
        ('--job-class', 'rq.job.Job', None),
        ('--job-class', 'cli_jobs.MyJob', None),
        ('--worker-class', 'cli_jobs.MyWorker', None),
        ('--connection-class', 'redis.Redis', None),
        ('--connection-class', 'cli_jobs.SyncRedis', 'is a blocking client: give a subclass of redis.asyncio.Redis'),
    ],
)
def test_worker_class_options(option: str, value: str, message: str | None, dead_url: str) -> None:
    """Refused with a reason, or taken (then the run reaches Redis, which is not there)."""
    result = invoke(['worker', '--url', dead_url, '--loop', 'asyncio', option, value])
    if message is None:
        assert result.exit_code == 1
        one_line(result, 'aiorq worker: Redis error: ')
    else:
        assert message in usage_error(result, option)


@pytest.mark.parametrize(
    'option, value, message',
    [
        ('--worker-class', 'cli_jobs.MyWorker', 'has no effect here: aiorq cron runs no jobs'),
        ('--job-class', 'cli_jobs.MyJob', 'has no effect here: aiorq cron enqueues through its protocol layer'),
        ('--queue-class', 'cli_jobs.MyQueue', 'has no effect here: aiorq cron enqueues through its protocol layer'),
        ('--queue-class', 'no_such_mod.Queue', "No module named 'no_such_mod'"),
        ('--worker-class', 'rq.Worker', None),
        ('--job-class', 'aiorq.Job', None),
        ('--queue-class', 'rq.Queue', None),
    ],
)
def test_cron_class_options(option: str, value: str, message: str | None, dead_url: str, cron_config: str) -> None:
    result = invoke(['cron', '--url', dead_url, option, value, cron_config])
    if message is None:
        assert result.exit_code == 1
        one_line(result, 'aiorq cron: Redis error: ')
    else:
        assert message in usage_error(result, option)


@pytest.mark.parametrize(
    'option, value, message',
    [
        ('--worker-class', 'cli_jobs.MyWorker', "has no effect here: aiorq info reads every worker's record"),
        ('--job-class', 'cli_jobs.StockJob', 'is a stock rq class'),
        ('--queue-class', 'cli_jobs.MyJob', 'is not a subclass of aiorq.Queue'),
        ('--worker-class', 'rq.worker.Worker', None),
        ('--job-class', 'cli_jobs.MyJob', None),
        ('--queue-class', 'cli_jobs.MyQueue', None),
    ],
)
def test_info_class_options(option: str, value: str, message: str | None, dead_url: str) -> None:
    result = invoke(['info', '--url', dead_url, option, value])
    if message is None:
        assert result.exit_code == 1
        one_line(result, 'aiorq info: Redis error: ')
    else:
        assert message in usage_error(result, option)


# -- the sessions of docs/cli.md, run as written ------------------------------------------


def run_as_documented(test: str, expected: list[tuple[str, int]], tmp_path: Path, dead_url: str) -> None:
    """The page shows exactly ``expected``'s commands for ``test``; each exits with its status and
    writes to stderr exactly the output shown under it. ``$REDIS_URL`` is a dead Redis, so that a
    command that did not fail as shown could not reach a Redis of the machine."""
    shown = cli_page.sessions(test)
    assert [command for command, _ in shown] == [command for command, _ in expected]
    for i, ((command, output), (_, status)) in enumerate(zip(shown, expected)):
        done, stdout, stderr = cli_page.run(command, tmp_path / str(i), REDIS_URL=dead_url)
        assert (done, stdout) == (status, ''), (command, done, stdout, stderr)
        assert stderr == output, command


def test_refused_class_as_documented(tmp_path: Path, dead_url: str) -> None:
    """docs/cli.md, Class options: a stock rq worker class is a usage error."""
    expected = [('aiorq worker -w rq.worker.SimpleWorker', 2)]
    run_as_documented('test_refused_class_as_documented', expected, tmp_path, dead_url)


def test_errors_as_documented(tmp_path: Path, dead_url: str) -> None:
    """docs/cli.md, Errors: a bad option value (exit 2), then failures after it (one line, exit 1)."""
    expected = [
        ('aiorq worker --concurrency 0', 2),
        ('aiorq worker --url redis://127.0.0.1:1/0', 1),
        ('aiorq info -c missing_settings', 1),
    ]
    run_as_documented('test_errors_as_documented', expected, tmp_path, dead_url)
