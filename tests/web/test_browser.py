"""The dashboard in a real browser: headless Chromium (Debian's, driven by Playwright) against
``aiorq dashboard`` serving a real Redis, with real ``aiorq worker`` and stock ``rq worker``
processes. The screenshots of docs/images/dashboard-*.png are taken here.

Without /usr/bin/chromium (or playwright) these tests skip, except under ``CI=true``, where
they fail: CI must run them (.ci/run installs chromium)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import redis
import rq
import web_tasks
from processes import Processes
from redis.asyncio import Redis
from redis_server import RedisServer, free_port
from rq.cron import CronScheduler
from rq.group import Group
from waiting import wait_for
from webkit import fill_failed, output, start_dashboard, stop, wait_serving

import aiorq
from aiorq_worker.throughput import ThroughputRecorder

CHROMIUM = Path('/usr/bin/chromium')
CHROMIUM_ARGS = [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--no-first-run',
]
HERE = Path(__file__).resolve().parent
IMAGES = HERE.parent.parent / 'docs' / 'images'
TIMEOUT = 30_000  # ms, for one wait in the browser (a loaded 2-core machine)


def missing() -> str | None:
    if not CHROMIUM.exists():
        return f'{CHROMIUM} is not installed (Debian: apt-get install chromium)'
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return 'playwright is not installed (pip install -e .[dev])'
    return None


@pytest.fixture(scope='module')
def chromium() -> str:
    why = missing()
    if why is not None:
        if os.environ.get('CI') == 'true':
            pytest.fail(f'the browser tests must run in CI: {why}')
        pytest.skip(why)
    return str(CHROMIUM)


@pytest_asyncio.fixture(scope='module', loop_scope='session')
async def browser(chromium: str) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        launched = await pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield launched
        await launched.close()


@pytest.fixture(scope='module')
def dashboard(chromium: str, redis_server: RedisServer) -> Iterator[str]:
    """``aiorq dashboard`` on the tests' Redis (database 0), polling fast for live updates."""
    port = free_port()
    proc = start_dashboard(redis_server.url(0), port, '--poll-interval', '0.5')
    try:
        wait_serving(proc, port)
        yield f'http://127.0.0.1:{port}'
    finally:
        assert stop(proc) == 0, output(proc)


@pytest_asyncio.fixture(loop_scope='session')
async def page(browser: Any) -> AsyncIterator[Any]:
    context = await browser.new_context(viewport={'width': 1280, 'height': 900})
    tab = await context.new_page()
    tab.set_default_timeout(TIMEOUT)
    from playwright.async_api import expect

    expect.set_options(timeout=TIMEOUT)
    yield tab
    await context.close()


async def shot(page: Any, name: str) -> None:
    IMAGES.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(IMAGES / f'dashboard-{name}.png'), full_page=True)


def aiorq_worker(processes: Processes, url: str, name: str, *args: str) -> None:
    cmd = [sys.executable, '-m', 'aiorq_worker', 'worker', '--url', url, '--path', str(HERE), '--name', name]
    processes.start(name, [*cmd, *args])


def stock_worker(processes: Processes, url: str, name: str, queue: str) -> None:
    cmd = [sys.executable, '-m', 'rq.cli', 'worker', '--url', url, '--path', str(HERE), '--name', name, queue]
    processes.start(name, cmd)


async def confirm(page: Any, action: str) -> None:
    """Click an action's button, then the confirmation page's "Yes"."""
    await page.click(f'button[data-action="{action}"]')
    await page.wait_for_selector('#question')
    await page.click('#confirm')


async def test_aiorq_worker_in_flight_stop_and_chart(
    page: Any, dashboard: str, conn: Redis, sync_conn: redis.Redis, redis_url: str, processes: Processes
) -> None:
    """20 executions of one aiorq worker on the overview (live), one stopped from its page, and
    the throughput chart drawn once jobs finished."""
    from playwright.async_api import expect

    q = aiorq.Queue('web', connection=conn)
    first = [await q.enqueue(web_tasks.hold, 'flag:first') for _ in range(10)]
    second = [await q.enqueue(web_tasks.hold, 'flag:second') for _ in range(10)]
    await page.goto(dashboard + '/')
    aiorq_worker(processes, redis_url, 'web-aiorq', '--concurrency', '20', 'web')
    rows = page.locator('[data-worker="web-aiorq"] table.executions tbody tr')
    await expect(rows).to_have_count(20)  # arrived by the live updates: the page was not reloaded
    section = await page.text_content('[data-worker="web-aiorq"]')
    assert all(job.id in section for job in first + second), section
    assert 'concurrency 20 · 20 in flight' in ' '.join(section.split())
    await shot(page, 'executions')

    stopped = second[-1]
    await page.goto(f'{dashboard}/jobs/{stopped.id}')
    await confirm(page, 'stop')
    await expect(page.locator('.flash')).to_contain_text('Sent stop-job for')
    await wait_for(lambda: sync_conn.hget(f'rq:job:{stopped.id}', 'status') == b'stopped', timeout=30)
    await page.reload()
    await expect(page.locator('h2 .status')).to_have_text('stopped')

    # The history a worker's ThroughputRecorder writes as jobs end (the stopped one counts as
    # failed), dated half an hour back: that bar is this test's whoever else writes history now.
    sync_conn.set('flag:first', 1)
    await wait_for(lambda: sync_conn.zcard('rq:finished:web') == 10, timeout=30)
    ended = time.time() - 30 * 60
    recorder = ThroughputRecorder(conn, clock=lambda: ended)
    for _ in first:
        recorder.job_ended('web', 'finished')
    recorder.job_ended('web', 'failed')
    assert await recorder.flush() == 11
    await page.goto(dashboard + '/')
    await expect(page.locator('#chart rect.bar-finished').first).to_be_visible()
    titles = await page.locator('#chart g.minute title').all_text_contents()
    # Half an hour back is minute 30 of the 60 shown (29 if the clock turned a minute meanwhile).
    drawn = [t for t in titles[25:35] if not t.endswith(': 0 finished, 0 failed')]
    assert len(drawn) == 1 and drawn[0].endswith(': 10 finished, 1 failed'), titles
    heights = await page.locator('#chart rect').evaluate_all('rects => rects.map(r => +r.getAttribute("height"))')
    assert heights and all(h > 0 for h in heights), heights
    await expect(rows).to_have_count(9)
    await shot(page, 'overview')
    sync_conn.set('flag:second', 1)
    await expect(rows).to_have_count(0)


async def test_failed_job_requeued_from_its_page_then_runs(
    page: Any, dashboard: str, conn: Redis, sync_conn: redis.Redis, redis_url: str, processes: Processes
) -> None:
    from playwright.async_api import expect

    aiorq_worker(processes, redis_url, 'web-retry', 'web')
    job = await aiorq.Queue('web', connection=conn).enqueue(web_tasks.fail_unless, 'flag:ok')
    await wait_for(lambda: sync_conn.hget(f'rq:job:{job.id}', 'status') == b'failed', timeout=30)
    await page.goto(f'{dashboard}/jobs/{job.id}')
    await expect(page.locator('pre.traceback')).to_contain_text('RuntimeError: flag:ok is not set yet')
    await shot(page, 'job')
    sync_conn.set('flag:ok', 1)
    await page.click('button[data-action="requeue"]')  # not destructive: no confirmation
    await expect(page.locator('.flash')).to_have_text(f'Requeued job {job.id} on web')
    await wait_for(lambda: sync_conn.hget(f'rq:job:{job.id}', 'status') == b'finished', timeout=30)
    await page.reload()
    await expect(page.locator('h2 .status')).to_have_text('finished')
    assert await page.locator('article.result strong').all_text_contents() == ['successful', 'failed']


async def test_bulk_requeue_of_1000_failed_jobs(page: Any, dashboard: str, conn: Redis, sync_conn: redis.Redis) -> None:
    from playwright.async_api import expect

    await fill_failed(conn, sync_conn, 'bulk', 1000)
    await page.goto(f'{dashboard}/queues/bulk?registry=failed')
    await expect(page.locator('a.active [data-count-kind="failed"]')).to_have_text('1000')
    await expect(page.locator('table.jobs tbody tr')).to_have_count(50)
    await shot(page, 'queue')
    await page.click('button[data-action="requeue-all"]')
    await expect(page.locator('#question')).to_have_text('Requeue every job of bulk/failed?')
    await shot(page, 'confirm')
    await page.click('#confirm')
    await expect(page.locator('.flash')).to_have_text('Requeued 1000 jobs of bulk/failed')
    assert sync_conn.zcard('rq:failed:bulk') == 0 and sync_conn.llen('rq:queue:bulk') == 1000
    await expect(page.locator('[data-count-kind="queued"]')).to_have_text('1000')


async def test_html_in_a_description_shows_as_text(
    page: Any, dashboard: str, conn: Redis, sync_conn: redis.Redis
) -> None:
    text = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script><b>bold</b>'
    job = await aiorq.Queue('html', connection=conn).enqueue(web_tasks.noop, description=text)
    for path in (f'/jobs/{job.id}', '/queues/html'):
        await page.goto(dashboard + path)
        cell = page.locator('#description' if path.startswith('/jobs') else 'td.description').first
        assert await cell.text_content() == text
        assert await cell.locator('b, img, script').count() == 0
        assert await page.evaluate('window.pwned') is None


async def test_stock_rq_fleet(
    page: Any, dashboard: str, sync_conn: redis.Redis, redis_url: str, processes: Processes
) -> None:
    """The same pages on stock rq's own writes: two ``rq worker`` processes, each running a job;
    a failure, a scheduled job, a group, an rq cron scheduler's records; no throughput history."""
    from playwright.async_api import expect

    q = rq.Queue('stock', connection=sync_conn)
    failed = q.enqueue(web_tasks.fail, 'stock failure')  # first: run before the holds take both workers
    Group(sync_conn, name='nightly').enqueue_many(q, [q.prepare_data(web_tasks.noop, (i,)) for i in range(3)])
    held = [q.enqueue(web_tasks.hold_sync, 'flag:stock') for _ in range(2)]
    q.enqueue_in(timedelta(hours=1), web_tasks.noop, 1)
    cron = CronScheduler(sync_conn, name='cron-host:1:abc123')
    cron.register(web_tasks.noop, 'stock', args=(7,), interval=600, name='every-ten-minutes')
    cron.register(web_tasks.noop, 'stock', cron='0 3 * * *', name='nightly-report')
    cron.enqueue_jobs()
    cron.register_birth()
    stock_worker(processes, redis_url, 'stock-1', 'stock')
    stock_worker(processes, redis_url, 'stock-2', 'stock')
    await page.goto(dashboard + '/')
    # The group's quick jobs may still be running: each worker ends up holding one of the two
    # held jobs, and the live update shows both.
    for job in held:
        await expect(page.locator('#live-workers')).to_contain_text(job.id, timeout=30_000)
    for name in ('stock-1', 'stock-2'):
        await expect(page.locator(f'[data-worker="{name}"] table.executions tbody tr')).to_have_count(1)
    await expect(page.locator('#chart')).to_contain_text('No history')
    await wait_for(lambda: sync_conn.hget(f'rq:job:{failed.id}', 'status') == b'failed', timeout=30)
    await page.goto(dashboard + '/workers')
    await expect(page.locator('table.records tbody tr')).to_have_count(2)
    await shot(page, 'workers')
    await page.goto(dashboard + '/scheduled')
    await expect(page.locator('table.jobs tbody tr')).to_have_count(1)
    await shot(page, 'scheduled')
    await page.goto(dashboard + '/cron')
    await expect(page.locator('#cron-jobs tbody tr')).to_have_count(2)
    assert 'every 600s' in await page.text_content('#cron-jobs') and '0 3 * * *' in await page.text_content(
        '#cron-jobs'
    )
    await shot(page, 'cron')
    await page.goto(dashboard + '/groups')
    await page.click('text=nightly')
    await expect(page.locator('table.jobs tbody tr')).to_have_count(3)
    await shot(page, 'group')
    await page.goto(f'{dashboard}/jobs/{failed.id}')
    await expect(page.locator('pre.traceback')).to_contain_text('ValueError: stock failure')
    sync_conn.set('flag:stock', 1)
    deadline = time.monotonic() + 30
    while any(sync_conn.hget(f'rq:job:{j.id}', 'status') != b'finished' for j in held):
        assert time.monotonic() < deadline, processes.logs()
        time.sleep(0.1)
