"""The manual (docs/ and README.md): it builds offline, and every code block in it runs.

The convention for code blocks, checked here for every page of docs/ and for README.md:

* A **```python block** in docs/ is executed. The python blocks of one page run in order, in one
  namespace and one process, as if typed into ``python -m asyncio``: top-level ``await`` works, and
  a later block sees the names of the earlier ones. A block without top-level ``await`` runs
  outside the event loop, so a whole program ending in ``asyncio.run(main())`` works as well. The
  process runs in the repository root with ``examples/`` first on its import path (``import mylib``).
  The docs' Redis is ``redis://127.0.0.1:6399`` (never 6379, where a shared Redis may live); the
  test replaces that address with a private ``redis-server`` of its own, served meanwhile by
  ``aiorq worker -s --path examples my_queue default``.
* A page may show an **example file** with pymdownx.snippets: ``--8<-- "examples/x.py"`` renders the
  real file (a missing file fails the build); the example's own test runs it. Blocks of the pages in
  ``tests/client/test_examples.py``'s ``DOCS_FROM_EXAMPLES`` are checked there to be cut from an
  example, and are not run again here.
* A **```python block in README.md** (which GitHub renders without snippets) must be the whole text
  of a file in examples/; the README's shell block runs it (``test_readme_quick_start``).
* A **```bash block** holds pure shell commands and is preceded by the HTML comment
  ``<!-- shell: tests/<file>.py::<test> -->`` naming the test that runs those commands; the named
  test must exist. (The README's quick start names ``tests/test_docs.py::test_readme_quick_start``,
  which runs the block as written, on a free port instead of 6399.)
* A **```console block** is a shell session (``$ command`` lines and their output); it follows the
  rule of bash blocks.
* A **```text block** is output or data (a help screen, an ACL rule, a log line), never code; so
  are ``yaml``, ``json``, ``toml`` and ``ini`` blocks (configuration of other programs).
* Any other fence language fails this test: decide which of the above a new block is.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis_server import RedisServer, free_port

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / 'docs'
EXAMPLES = ROOT / 'examples'
VENV_BIN = Path(sys.executable).parent
DOCS_REDIS = re.compile(r'(127\.0\.0\.1|localhost):6399')
FENCE = re.compile(r'^(?P<indent>[ \t]*)```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$', re.M | re.S)
SHELL_MARK = re.compile(r'<!--\s*shell:\s*(?P<file>tests/[\w/.-]+\.py)::(?P<test>\w+)\s*-->\s*$')
LANGS = {'python', 'bash', 'console', 'text', 'yaml', 'json', 'toml', 'ini'}


def pages() -> list[Path]:
    return sorted(DOCS.rglob('*.md'))


def blocks(path: Path) -> list[tuple[int, str, str, str]]:
    """``(line of the first code line, language, code, text before the fence)`` of each fenced block."""
    text = path.read_text()
    found = []
    for m in FENCE.finditer(text):
        line = text.count('\n', 0, m.start('body')) + 1
        body = textwrap.dedent(m.group('body'))
        found.append((line, m.group('lang'), body, text[: m.start()]))
    return found


def docs_from_examples() -> set[str]:
    """The pages whose blocks tests/client/test_examples.py checks against an example script."""
    source = (ROOT / 'tests' / 'client' / 'test_examples.py').read_text()
    m = re.search(r'^DOCS_FROM_EXAMPLES = (\{.*?\})$', source, flags=re.M)
    return set(eval(m.group(1))) if m else set()  # a literal dict of page -> script


# -- the build ------------------------------------------------------------------------------------


@pytest.fixture(scope='module')
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp('site')
    proc = subprocess.run(
        [str(VENV_BIN / 'mkdocs'), 'build', '--strict', '--site-dir', str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


NETWORK_ASSET = re.compile(
    r'<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)\s*=\s*["\']?(?:https?:)?//'  # a tag loading from a host
    r'|@import\s+(?:url\()?["\']?(?:https?:)?//'  # CSS import of a remote sheet
    r'|url\(\s*["\']?(?:https?:)?//',  # CSS fonts/images from a host
    re.I,
)
CDN_NAMES = re.compile(r'cdnjs\.|cdn\.jsdelivr|unpkg\.com|googleapis\.com|gstatic\.com|highlight(?:\.min)?\.js', re.I)


def test_docs_build_strict_and_offline(site: Path) -> None:
    """``mkdocs build --strict`` passes, and no page loads a script, style or font from the network."""
    offenders = []
    for path in sorted(site.rglob('*')):
        if path.suffix not in ('.html', '.css', '.js'):
            continue
        text = path.read_text(errors='replace')
        for m in NETWORK_ASSET.finditer(text):
            offenders.append(f'{path.relative_to(site)}: {m.group(0)}')
        if path.suffix == '.html':
            # html only: the theme's vendored css/js carry licence comments and icon names like "maxcdn"
            for m in CDN_NAMES.finditer(text):
                offenders.append(f'{path.relative_to(site)}: {m.group(0)}')
    assert not offenders, '\n'.join(offenders)
    index = (site / 'index.html').read_text()
    assert 'css/pygments.css' in index
    assert (site / 'css' / 'pygments.css').exists()
    worker_page = (site / 'worker' / 'index.html').read_text()
    assert '<div class="highlight">' in worker_page and '<span class="' in worker_page, 'code is not highlighted'


def test_api_reference_is_generated(site: Path) -> None:
    client = (site / 'reference' / 'client' / 'index.html').read_text()
    for name in ('aiorq.Queue', 'aiorq.Job', 'aiorq.Result', 'aiorq.Group', 'enqueue', 'latest_result'):
        assert name in client, name
    worker = (site / 'reference' / 'worker' / 'index.html').read_text()
    assert 'aiorq_worker.Worker' in worker and 'concurrency' in worker


def test_snippets_show_the_real_example(site: Path) -> None:
    """An ``--8<--`` include renders the example file itself."""
    index = (site / 'index.html').read_text()
    assert 'aiorq worker --path examples' in index
    assert 'REDIS_URL' in index  # a line of examples/quickstart.py


# -- the convention ---------------------------------------------------------------------------------


def all_blocks() -> list[tuple[Path, int, str, str, str]]:
    return [(page, *block) for page in [*pages(), ROOT / 'README.md'] for block in blocks(page)]


def test_every_block_follows_the_convention() -> None:
    problems = []
    for page, line, lang, body, before in all_blocks():
        where = f'{page.relative_to(ROOT)}:{line}'
        if lang not in LANGS:
            problems.append(f'{where}: fence language {lang!r}; use one of {sorted(LANGS)} (see this docstring)')
        elif lang in ('bash', 'console'):
            last = before.rstrip('\n').rsplit('\n', 1)[-1]
            m = SHELL_MARK.search(last)
            if m is None:
                problems.append(f'{where}: a {lang} block needs <!-- shell: tests/FILE.py::TEST --> just above it')
                continue
            test_file = ROOT / m.group('file')
            if not test_file.exists() or not re.search(rf'def {m.group("test")}\(', test_file.read_text()):
                problems.append(f'{where}: {m.group("file")}::{m.group("test")} does not exist')
        elif lang == 'python' and SNIPPET.match(body):
            for name in re.findall(r'"([^"]+)"', body):
                if not name.startswith('examples/') or not (ROOT / name).is_file():
                    problems.append(f'{where}: {name} is not a file of examples/')
        elif lang == 'python' and page.name == 'README.md':
            if not any(body == example.read_text() for example in EXAMPLES.glob('*.py')):
                problems.append(f'{where}: a README python block must be the whole text of a file in examples/')
        if re.search(r'(?<!\d)6379(?!\d)', body):
            problems.append(f'{where}: the docs use the Redis at 127.0.0.1:6399, never 6379')
    assert not problems, '\n'.join(problems)


# -- running the python blocks ---------------------------------------------------------------------

RUNNER = r'''
import ast, asyncio, inspect, json, sys
page, blocks = json.load(sys.stdin)
namespace = {'__name__': '__main__'}
loop = asyncio.new_event_loop()
for line, source in blocks:
    print(f'--- {page}:{line}', flush=True)
    code = compile('\n' * (line - 1) + source, page, 'exec', flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    if code.co_flags & inspect.CO_COROUTINE:
        loop.run_until_complete(eval(code, namespace))
    else:
        exec(code, namespace)
loop.run_until_complete(asyncio.sleep(0))
print('--- all blocks ran', flush=True)
'''


@pytest.fixture(scope='module')
def docs_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A private Redis for the docs, served by an aiorq worker with the scheduler; and the worker's log."""
    server = RedisServer()
    url = server.url(0)
    log_path = tmp_path_factory.mktemp('docs-worker') / 'worker.log'
    log = log_path.open('wb')
    worker = subprocess.Popen(
        [str(VENV_BIN / 'aiorq'), 'worker', '-s', '--path', str(EXAMPLES), '--url', url, 'my_queue', 'default'],
        cwd=ROOT,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 60
    while not client.scard('rq:workers') and worker.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)  # the pages expect a registered worker
    client.close()
    try:
        assert worker.poll() is None, log_path.read_text(errors='replace')
        yield url, log_path
    finally:
        worker.terminate()
        try:
            worker.wait(15)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        log.close()
        server.stop()


SNIPPET = re.compile(r'\A(?:--8<-- "[^"\n]+"\n)+\Z')  # a block that shows example files


def page_blocks(page: Path) -> list[tuple[int, str]]:
    return [(line, body) for line, lang, body, _ in blocks(page) if lang == 'python' and not SNIPPET.match(body)]


RUN_PAGES = [p for p in pages() if page_blocks(p) and p.name not in docs_from_examples()]


@pytest.mark.parametrize('page', RUN_PAGES, ids=[str(p.relative_to(DOCS)) for p in RUN_PAGES])
def test_python_blocks_run(page: Path, docs_redis: tuple[str, Path]) -> None:
    url, worker_log = docs_redis
    address = url.removeprefix('redis://').split('/')[0]
    code_blocks = [(line, DOCS_REDIS.sub(address, body)) for line, body in page_blocks(page)]
    env = {k: v for k, v in os.environ.items() if k not in ('REDIS_URL', 'RQ_REDIS_URL')}
    env['PYTHONPATH'] = os.pathsep.join([str(EXAMPLES), str(ROOT)])
    env['REDIS_URL'] = url
    proc = subprocess.run(
        [sys.executable, '-c', RUNNER],
        input=json.dumps([str(page.relative_to(ROOT)), code_blocks]),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    log_tail = '\n'.join(worker_log.read_text(errors='replace').splitlines()[-30:])
    assert proc.returncode == 0 and '--- all blocks ran' in proc.stdout, (
        f'{proc.stdout}{proc.stderr}\n--- the worker log ends with:\n{log_tail}'
    )


# -- the README's quick start ----------------------------------------------------------------------


def readme_shell_block() -> str:
    """The README's quick start; docs/index.md shows the same block."""
    marked = [
        (page, body)
        for page, _, lang, body, before in all_blocks()
        if lang == 'bash' and 'test_readme_quick_start' in before.rstrip('\n').rsplit('\n', 1)[-1]
    ]
    readme = [body for page, body in marked if page.name == 'README.md']
    assert len(readme) == 1, 'README.md needs one quick start block marked for test_readme_quick_start'
    for page, body in marked:
        assert body == readme[0], f'{page}: the quick start differs from the README\'s'
    return readme[0]


def test_readme_quick_start() -> None:
    """The README's quick start as a newcomer types it: a private Redis, ``aiorq worker``, the example."""
    port = free_port()
    lines = readme_shell_block().replace('6399', str(port)).splitlines()
    # As a person typing the lines one by one would: the next line only once Redis answers.
    ready = f'until redis-cli -p {port} ping >/dev/null 2>&1; do sleep 0.1; done'
    script = '\n'.join(f'{line}\n{ready}' if line.startswith('redis-server ') else line for line in lines)
    env = {k: v for k, v in os.environ.items() if k not in ('REDIS_URL', 'RQ_REDIS_URL', 'PYTHONPATH')}
    env['PATH'] = os.pathsep.join([str(VENV_BIN), env.get('PATH', '')])
    env['REDIS_URL'] = f'redis://127.0.0.1:{port}/0'  # examples/quickstart.py reads it; 6399 otherwise
    assert shutil.which('redis-server', path=env['PATH']), 'redis-server is not installed'
    proc = subprocess.Popen(
        ['bash', '-c', script],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,  # the worker logs there, so the example's printed line stays whole
        text=True,
        start_new_session=True,
    )
    err = ''
    try:
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        try:  # the block shuts its Redis down itself; make sure of it
            redis.Redis(port=port, socket_connect_timeout=0.5).shutdown(nosave=True)
        except redis.exceptions.ConnectionError:
            pass
    assert proc.returncode == 0, out + err
    assert re.search(r'^3$', out, flags=re.M), out + err  # the printed result of mylib.add(1, 2)


def test_worker_page_names_every_option() -> None:
    """docs/worker.md describes every option that ``aiorq worker --help`` lists."""
    help_text = subprocess.run(
        [str(VENV_BIN / 'aiorq'), 'worker', '--help'], capture_output=True, text=True, check=True
    ).stdout
    options = set(re.findall(r'(?<![\w-])(--[a-z][\w-]*)', help_text)) - {'--help'}
    page = (DOCS / 'worker.md').read_text()
    missing = sorted(o for o in options if f'`{o}' not in page and f'/{o}' not in page and f'{o}`' not in page)
    assert not missing, f'docs/worker.md does not describe: {missing}'
