"""The shell sessions of docs/observability.md, for the tests that run them as written.

A console block there is preceded by ``<!-- shell: tests/observability/<file>.py::<test> -->``;
:func:`commands` returns the commands of the blocks marked for one test, so that the test runs
what the page shows (and fails when the page shows something else)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / 'docs' / 'observability.md'
MARKED = re.compile(
    r'^<!--\s*shell:\s*tests/observability/(?P<file>\w+)\.py::(?P<test>\w+)\s*-->\n```console\n(?P<body>.*?)^```',
    re.M | re.S,
)


def commands(test: str) -> list[str]:
    """The ``$ `` commands (continuation lines joined) of the console blocks marked for ``test``."""
    found: list[str] = []
    for m in MARKED.finditer(PAGE.read_text()):
        if m.group('test') != test:
            continue
        pending = ''
        for line in m.group('body').splitlines():
            if pending:
                pending += '\n' + line
            elif line.startswith('$ '):
                pending = line[2:]
            else:
                continue  # output
            if not pending.endswith('\\'):
                found.append(pending)
                pending = ''
        assert not pending, f'{test}: a command ends with a backslash'
    assert found, f'docs/observability.md has no console block marked for {test}'
    return found


class Shell:
    """One documented command run by ``bash -c`` in the repository root, in a session of its own
    (so that stopping it reaches the worker, not just bash); stdout and stderr in files."""

    def __init__(self, command: str, env: dict[str, str], directory: Path) -> None:
        self.stdout = directory / 'stdout.log'
        self.stderr = directory / 'stderr.log'
        with self.stdout.open('wb') as out, self.stderr.open('wb') as err:
            self.proc = subprocess.Popen(
                ['bash', '-c', command], cwd=ROOT, env=env, stdout=out, stderr=err, start_new_session=True
            )

    def out(self) -> str:
        return self.stdout.read_text(errors='replace')

    def log(self) -> str:
        return f'--- stdout\n{self.out()[-4000:]}\n--- stderr\n{self.stderr.read_text(errors="replace")[-4000:]}'

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM to the command's process group (a warm shutdown); its exit code."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            raise


@contextmanager
def shell(command: str, directory: Path, **env: str) -> Iterator[Shell]:
    """Run ``command`` with the venv's ``aiorq``/``rq`` first on PATH, the environment plus ``env``
    (without a Redis URL or PYTHONPATH unless given); make sure it is gone afterwards."""
    base = {k: v for k, v in os.environ.items() if k not in ('REDIS_URL', 'RQ_REDIS_URL', 'PYTHONPATH')}
    base['PATH'] = os.pathsep.join([str(Path(sys.executable).parent), base.get('PATH', '')])
    session = Shell(command, {**base, **env}, directory)
    try:
        yield session
    finally:
        if session.proc.poll() is None:
            os.killpg(session.proc.pid, signal.SIGKILL)
            session.proc.wait()


def wait_until(check: Callable[[], object], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f'timed out waiting for {what}'
        time.sleep(0.05)


def console_spans(text: str) -> list[dict[str, Any]]:
    """The spans that the SDK's ConsoleSpanExporter printed (indented JSON objects) in ``text``."""
    decoder = json.JSONDecoder()
    spans = []
    for m in re.finditer(r'^\{', text, re.M):
        try:
            obj, _ = decoder.raw_decode(text, m.start())
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict) and 'context' in obj and 'name' in obj:
            spans.append(obj)
    return spans
