"""``aiorq dashboard``: serves on loopback, with basic auth from its options and environment, and
says in one line what it needs when the web extra is missing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import redis
from redis_server import free_port
from webkit import output, start_dashboard, stop, wait_serving


def test_serves_with_basic_auth(sync_conn: redis.Redis, redis_url: str) -> None:
    sync_conn.sadd('rq:queues', 'rq:queue:cli-queue')
    port = free_port()
    env = {**os.environ, 'AIORQ_DASHBOARD_PASSWORD': 'pa55word'}
    proc = start_dashboard(redis_url, port, '--username', 'admin', env=env)
    try:
        wait_serving(proc, port)
        home = f'http://127.0.0.1:{port}/'
        refused = httpx.get(home)
        assert refused.status_code == 401 and refused.headers['www-authenticate'].startswith('Basic ')
        assert httpx.get(home, auth=('admin', 'wrong')).status_code == 401
        page = httpx.get(home, auth=('admin', 'pa55word'))
        assert page.status_code == 200 and 'cli-queue' in page.text
        assert f'aiorq dashboard: http://127.0.0.1:{port}/' in output(proc)
    finally:
        assert stop(proc) == 0, output(proc)


def test_needs_both_username_and_password(redis_url: str) -> None:
    cmd = [sys.executable, '-m', 'aiorq_worker', 'dashboard', '--url', redis_url, '--username', 'admin']
    env = {k: v for k, v in os.environ.items() if not k.startswith('AIORQ_DASHBOARD_')}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 2, done.stderr
    assert 'give both --username and --password, or neither' in done.stderr


def test_without_the_web_extra(redis_url: str, tmp_path: Path) -> None:
    """As if starlette, jinja2 and uvicorn were not installed: aiorq imports and works, and the
    command fails in one line naming the extra."""
    for name in ('starlette', 'jinja2', 'uvicorn'):
        (tmp_path / name).mkdir()
        (tmp_path / name / '__init__.py').write_text(f'raise ImportError("no {name} here")\n')
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join([str(tmp_path), os.environ.get('PYTHONPATH', '')])}
    check = 'import aiorq, aiorq_worker.cli, aiorq_worker.throughput, aiorq.protocol.browse'
    done = subprocess.run([sys.executable, '-c', check], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    cmd = [sys.executable, '-m', 'aiorq_worker', 'dashboard', '--url', redis_url, '--port', str(free_port())]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "aiorq dashboard: the dashboard needs the web extra: pip install 'aiorq[web]' (no uvicorn here)"
    ], done.stderr


def test_the_docs_command(sync_conn: redis.Redis, redis_url: str) -> None:
    """docs/dashboard.md's command block as written (our Redis for 6399, a free port by the
    environment): it serves, behind basic auth with the password from the environment."""
    text = (Path(__file__).resolve().parents[2] / 'docs' / 'dashboard.md').read_text()
    block = text.split('test_the_docs_command -->\n```bash\n', 1)[1].split('```', 1)[0]
    assert 'aiorq dashboard --url redis://127.0.0.1:6399/0' in block
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith('AIORQ_DASHBOARD_')}
    env['AIORQ_DASHBOARD_PORT'] = str(port)
    env['PATH'] = os.pathsep.join([str(Path(sys.executable).parent), env.get('PATH', '')])
    script = block.replace('redis://127.0.0.1:6399/0', redis_url)
    proc = subprocess.Popen(
        ['bash', '-c', script],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate(timeout=5)[0]
            try:
                refused = httpx.get(f'http://127.0.0.1:{port}/', timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        assert refused.status_code == 401
        assert httpx.get(f'http://127.0.0.1:{port}/', auth=('admin', 'choose-a-password')).status_code == 200
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
