"""The dashboard's pages and gates, served by the ASGI app itself (httpx, no server): what each
page shows of rq's data, escaping, never unpickling, auth, CSRF, confirmations, mounting."""

from __future__ import annotations

import base64
import builtins
import json
import pickle
import zlib
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import rq
import rq.command
import tasks
from redis.asyncio import Redis
from redis_server import RedisServer
from rq.group import Group
from rq.serializers import JSONSerializer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Mount
from waiting import wait_for
from webkit import BASE, act, client, csrf

import aiorq
import aiorq.web

PAGES = ['/', '/api/live', '/workers', '/scheduled', '/cron', '/groups', '/static/dashboard.js']


def run_stock_worker(conn: redis.Redis, *queues: str) -> None:
    worker = rq.SimpleWorker([rq.Queue(q, connection=conn) for q in queues], connection=conn, name='stock')
    worker.work(burst=True, logging_level='WARNING')


def fill(conn: redis.Redis) -> None:
    """A bit of everything rq writes: finished, failed, deferred, scheduled, canceled, a group."""
    q = rq.Queue('q', connection=conn)
    q.enqueue(tasks.add, 1, 2, job_id='ok')
    q.enqueue(tasks.fail, 'bad', job_id='bad')
    q.enqueue(tasks.add, 1, 2, job_id='parent')
    run_stock_worker(conn, 'q')
    q.enqueue(tasks.add, 3, 4, job_id='child', depends_on=rq.job.Job.fetch('bad', connection=conn))
    q.enqueue(tasks.add, 5, 5, job_id='waiting')
    q.enqueue(tasks.add, 5, 6, job_id='gone')
    rq.cancel_job('gone', connection=conn)
    q.enqueue_at(datetime(2030, 1, 1, tzinfo=timezone.utc), tasks.add, 1, 1, job_id='sched')
    other = rq.Queue('other', connection=conn)
    Group(conn, name='g').enqueue_many(
        other, [other.prepare_data(tasks.add, (1, 2), job_id='g1'), other.prepare_data(tasks.add, (3, 4), job_id='g2')]
    )


async def page(c: httpx.AsyncClient, path: str, status: int = 200) -> str:
    response = await c.get(path)
    assert response.status_code == status, (path, response.status_code, response.text[-2000:])
    return response.text


async def test_pages_show_rq_data(conn: Redis, sync_conn: redis.Redis) -> None:
    fill(sync_conn)
    async with client(conn) as c:
        overview = await page(c, '/')
        row = overview.split('<tr data-queue="q">')[1].split('</tr>')[0]
        numbers = [int(cell.split('>')[-1]) for cell in row.split('</a>')[1:-1]]
        # queued, then started finished failed deferred scheduled canceled ready
        assert numbers == [1, 0, 2, 1, 1, 1, 1, 0], row
        assert 'data-queue="other"' in overview and 'No workers registered.' in overview

        failed = await page(c, '/queues/q?registry=failed')
        assert '/jobs/bad' in failed
        assert 'tasks.fail(&#39;bad&#39;)' in failed
        finished = await page(c, '/queues/q?registry=finished')
        assert finished.index('/jobs/parent') < finished.index('/jobs/ok') or 'ok' in finished
        assert '/jobs/waiting' in await page(c, '/queues/q')

        bad = await page(c, '/jobs/bad')
        assert 'ValueError: bad' in bad and 'Traceback (most recent call last)' in bad
        assert '<strong>failed</strong>' in bad and 'data-action="requeue"' in bad
        child = await page(c, '/jobs/child')
        assert '<a class="job-id" href="/jobs/bad">bad</a> <span class="status status-failed">failed</span>' in child
        assert 'deferred' in child
        assert 'position in queue</th><td>1<' in await page(c, '/jobs/waiting')

        scheduled = await page(c, '/scheduled')
        assert '/jobs/sched' in scheduled and '2030-01-01 00:00:00 UTC' in scheduled
        groups = await page(c, '/groups')
        assert '<a href="/groups/g">g</a></td><td class="n">2<' in groups
        group = await page(c, '/groups/g')
        assert '/jobs/g1' in group and '/jobs/g2' in group

        found = await c.get('/search', params={'q': 'bad'})
        assert found.status_code == 303 and found.headers['location'] == '/jobs/bad'
        assert (await c.get('/search', params={'q': 'bad:0123abcd'})).headers['location'] == '/jobs/bad'
        await page(c, '/search?q=nope', 404)
        await page(c, '/jobs/nope', 404)
        await page(c, '/queues/q?registry=nope', 404)
        for path in PAGES:
            await page(c, path)


async def test_pagination_is_newest_first(conn: Redis, sync_conn: redis.Redis) -> None:
    for i in range(7):
        sync_conn.zadd('rq:failed:p', {f'j{i}': 1_900_000_000 + i})
        sync_conn.hset(f'rq:job:j{i}', mapping={'status': 'failed', 'description': f'job number {i}', 'origin': 'p'})
    sync_conn.sadd('rq:queues', 'rq:queue:p')
    async with client(conn) as c:
        first = await page(c, '/queues/p?registry=failed&per_page=3')
        assert [n for n in range(7) if f'job number {n}<' in first] == [4, 5, 6]
        assert 'page 1 of 3 (7 jobs)' in first
        last = await page(c, '/queues/p?registry=failed&per_page=3&page=3')
        assert [n for n in range(7) if f'job number {n}<' in last] == [0]
        assert 'page 3 of 3' in last


class Booby:
    """Unpickling this runs ``open(path, 'w')``: the marker file proves a load happened."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return builtins.exec, (f'open({self.path!r}, "w").close()',)


async def test_never_unpickles_and_escapes(conn: Redis, sync_conn: redis.Redis, tmp_path: Path) -> None:
    """Job data, meta, the legacy result field and result values hold pickles that would create
    a file when loaded; descriptions and names hold markup. Every page and action runs."""
    marker = tmp_path / 'unpickled'
    booby = pickle.dumps(Booby(marker))
    html = '<script>alert("pwned")</script>'
    q = rq.Queue('q', connection=sync_conn)
    for job_id in ('b1', 'b2', 'b3'):
        q.enqueue(tasks.fail, 'x', job_id=job_id, description=html)
    run_stock_worker(sync_conn, 'q')
    for job_id in ('b1', 'b2', 'b3'):
        sync_conn.hset(f'rq:job:{job_id}', mapping={'data': booby, 'meta': booby, 'result': booby})
        sync_conn.xadd(f'rq:results:{job_id}', {'type': 1, 'return_value': base64.b64encode(booby)})
    # JSON meta is shown, as text.
    json_q = rq.Queue('json', connection=sync_conn, serializer=JSONSerializer)
    json_q.enqueue('tasks.add', 1, 2, job_id='js', meta={'note': '<img src=x onerror=alert(1)>'})
    async with client(conn) as c:
        for path in [*PAGES, '/queues/q?registry=failed', '/jobs/b1', '/jobs/js']:
            text = await page(c, path)
            assert html not in text and '<img src=x' not in text, path
        job = await page(c, '/jobs/b1')
        assert '&lt;script&gt;alert(&#34;pwned&#34;)&lt;/script&gt;' in job
        assert 'not shown: not JSON (the dashboard never unpickles)' in job
        assert '&lt;img src=x onerror=alert(1)&gt;' in await page(c, '/jobs/js')
        assert await act(c, 'requeue', job_id='b1') == ('ok', 'Requeued job b1 on q')
        assert (await act(c, 'cancel', job_id='b1'))[0] == 'ok'
        assert (await act(c, 'delete', job_id='b2'))[0] == 'ok'
        assert (await act(c, 'requeue-all', queue='q'))[1] == 'Requeued 1 jobs of q/failed'
    assert not marker.exists()
    # What rq writes back is what it read (``data`` compressed, as rq's save compresses it),
    # never the placeholder of an unreadable value.
    assert zlib.decompress(sync_conn.hget('rq:job:b3', 'data')) == booby
    assert sync_conn.hget('rq:job:b3', 'meta') == sync_conn.hget('rq:job:b3', 'result') == booby


async def test_auth_callables(conn: Redis, sync_conn: redis.Redis) -> None:
    async def async_yes(request: Request) -> bool:
        return request.headers.get('x-token') == 'let-me-in'

    async with client(conn, auth=async_yes) as c:
        assert (await c.get('/')).status_code == 401
        assert (await c.get('/static/dashboard.css')).status_code == 401
        assert (await c.get('/', headers={'x-token': 'let-me-in'})).status_code == 200
    async with client(conn, auth=lambda request: False) as c:
        refused = await c.get('/api/live')
        assert refused.status_code == 401 and 'www-authenticate' not in refused.headers
    async with client(conn, auth=aiorq.web.BasicAuth('admin', 's3cret')) as c:
        refused = await c.get('/')
        assert refused.status_code == 401
        assert refused.headers['www-authenticate'].startswith('Basic realm="aiorq dashboard"')
        assert (await c.get('/', auth=('admin', 'wrong'))).status_code == 401
        assert (await c.get('/', auth=('root', 's3cret'))).status_code == 401
        assert (await c.get('/', headers={'Authorization': 'Basic !!!'})).status_code == 401
        assert (await c.get('/', auth=('admin', 's3cret'))).status_code == 200
    with pytest.raises(ValueError):
        aiorq.web.BasicAuth('admin', '')
    text_client = Redis.from_url('redis://127.0.0.1:6399/0', decode_responses=True)
    with pytest.raises(ValueError, match='decode_responses=False'):
        aiorq.web.dashboard(text_client)
    await text_client.aclose()


async def test_csrf_and_confirmation(conn: Redis, sync_conn: redis.Redis) -> None:
    fill(sync_conn)
    async with client(conn) as c:
        token = await csrf(c)
        assert (await c.post('/actions/delete', data={'job_id': 'ok', 'confirmed': 'yes'})).status_code == 403
        wrong = {'job_id': 'ok', 'confirmed': 'yes', 'csrf': 'f' * 64}
        assert (await c.post('/actions/delete', data=wrong)).status_code == 403
        c.cookies.delete('aiorq_csrf')
        assert (await c.post('/actions/delete', data={**wrong, 'csrf': token})).status_code == 403
        assert sync_conn.exists('rq:job:ok')

        c.cookies.set('aiorq_csrf', token)
        asked = await c.post('/actions/delete', data={'job_id': 'ok', 'csrf': token, 'next': '/queues/q'})
        assert asked.status_code == 200 and 'Delete job ok, its results and executions?' in asked.text
        assert 'name="confirmed" value="yes"' in asked.text and 'href="/queues/q"' in asked.text
        assert sync_conn.exists('rq:job:ok')
        by_header = await c.post(
            '/actions/delete', data={'job_id': 'ok', 'confirmed': 'yes'}, headers={'X-CSRF-Token': token}
        )
        assert by_header.status_code == 303 and not sync_conn.exists('rq:job:ok')
        # A requeue is not destructive: no confirmation. Where it leads is a page of the dashboard.
        done = await c.post('/actions/requeue', data={'job_id': 'bad', 'csrf': token, 'next': 'https://elsewhere/'})
        assert done.status_code == 303 and done.headers['location'] == '/'
        assert sync_conn.hget('rq:job:bad', 'status') == b'queued'
        assert 'Requeued job bad on q' in await page(c, '/')
        assert 'Requeued job bad' not in await page(c, '/'), 'a message is shown once'


async def test_action_errors_are_messages(conn: Redis, sync_conn: redis.Redis) -> None:
    fill(sync_conn)
    async with client(conn) as c:
        kind, message = await act(c, 'requeue', job_id='waiting')
        assert (kind, message) == (
            'error',
            'InvalidJobOperation: Job waiting is queued: only failed, stopped and canceled jobs can be requeued',
        )
        assert await act(c, 'stop', job_id='waiting') == (
            'error',
            'InvalidJobOperation: Job is not currently executing',
        )
        assert (await act(c, 'delete', job_id='nope'))[0] == 'error'
        assert (await act(c, 'cancel', job_id='gone'))[1].startswith('InvalidJobOperation: Cannot cancel already')
        assert (await act(c, 'requeue-all', queue='q', registry='started'))[0] == 'error'
        assert (await c.post('/actions/nope', data={'csrf': await csrf(c)})).status_code == 404
        assert (await c.post('/actions/delete', data={'csrf': await csrf(c), 'confirmed': 'yes'})).status_code == 400
        big = {'csrf': await csrf(c), 'job_id': 'x' * 70_000}
        assert (await c.post('/actions/delete', data=big)).status_code == 413


async def test_stop_and_suspend_send_what_rq_sends(conn: Redis, sync_conn: redis.Redis) -> None:
    """The stop-job command published on the worker's channel is rq's own message."""
    sync_conn.hset('rq:job:running', mapping={'status': 'started', 'worker_name': 'w1', 'data': b'x'})
    pubsub = sync_conn.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe('rq:pubsub:w1')
    rq.command.send_stop_job_command(sync_conn, 'running')
    async with client(conn) as c:
        assert await act(c, 'stop', job_id='running') == ('ok', 'Sent stop-job for running to worker w1')
        assert await act(c, 'suspend') == ('ok', 'Workers suspended: they take no new jobs until resumed')
        assert sync_conn.get('rq:suspended') == b'1'
        assert 'Workers are suspended' in await page(c, '/workers')
        assert await act(c, 'resume') == ('ok', 'Workers resumed')
        assert not sync_conn.exists('rq:suspended')
    messages: list[Any] = []
    await wait_for(lambda: (m := pubsub.get_message(timeout=0.1)) and messages.append(m['data']) or len(messages) == 2)
    assert messages[0] == messages[1] == json.dumps({'command': 'stop-job', 'job_id': 'running'}).encode()
    pubsub.close()


async def test_mounted_in_an_app(conn: Redis, sync_conn: redis.Redis) -> None:
    """Under a prefix, every link, the static files, the actions and their redirects keep it."""
    fill(sync_conn)
    outer = Starlette(routes=[Mount('/ops/jobs', aiorq.web.dashboard(conn, title='Ops'))])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=outer), base_url=BASE) as c:
        home = await page(c, '/ops/jobs/')
        assert 'href="/ops/jobs/queues/q"' in home and 'src="/ops/jobs/static/dashboard.js' in home
        assert '<title>Overview · Ops dashboard</title>' in home
        assert (await c.get('/ops/jobs/static/dashboard.css')).status_code == 200
        token = c.cookies['aiorq_csrf']
        done = await c.post(
            '/ops/jobs/actions/requeue', data={'csrf': token, 'job_id': 'bad', 'next': '/ops/jobs/jobs/bad'}
        )
        assert done.status_code == 303 and done.headers['location'] == '/ops/jobs/jobs/bad'
        assert 'Requeued job bad on q' in await page(c, '/ops/jobs/jobs/bad')
        assert (await c.get('/ops/jobs/search', params={'q': 'ok'})).headers['location'] == '/ops/jobs/jobs/ok'


async def test_redis_password_never_shown_and_redis_errors_are_pages() -> None:
    server = RedisServer()
    try:
        redis.Redis(port=server.port).config_set('requirepass', 'hunter2-secret')
        url = f'redis://:hunter2-secret@127.0.0.1:{server.port}/0'
        rq.Queue('q', connection=redis.Redis.from_url(url)).enqueue(tasks.add, 1, 2, job_id='one')
        conn = aiorq.from_url(url)
        async with client(conn) as c:
            for path in [*PAGES, '/queues/q', '/jobs/one']:
                text = await page(c, path)
                assert 'hunter2' not in text, path
            assert f'Redis 127.0.0.1:{server.port}/0' in await page(c, '/')
        await conn.aclose()
        wrong = aiorq.from_url(f'redis://:wrong-hunter3@127.0.0.1:{server.port}/0')
        async with client(wrong) as c:
            refused = await page(c, '/', 503)
            assert 'Redis error' in refused and 'hunter' not in refused
        await wrong.aclose()
    finally:
        server.stop()
