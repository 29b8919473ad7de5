"""The dashboard's ASGI app: server-rendered pages (Jinja2, every value escaped), a small
vendored script that polls one JSON endpoint for live counts, executions and the chart, and POST
actions behind CSRF protection, with a confirmation page for the destructive ones."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote, unquote

from redis.asyncio import Redis
from redis.exceptions import RedisError
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp

from aiorq.protocol import actions, browse
from aiorq.version import VERSION

from . import security, views

PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
SCHEDULED_LIMIT = 100
MAX_BODY = 64 * 1024  # the actions' forms are small
FLASH_COOKIE = 'aiorq_flash'
HEADERS = {
    # Scripts and styles only from the package's own files; no framing, no foreign form targets.
    'Content-Security-Policy': "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'self'",
    'X-Content-Type-Options': 'nosniff',
    'Referrer-Policy': 'same-origin',
    'Cache-Control': 'no-store',
}


@dataclass(frozen=True)
class Action:
    """One POST action: what it needs, whether it asks for confirmation, how it reads."""

    needs: str  # 'job', 'queue' or ''
    confirm: str  # the question of its confirmation page ('' = none)
    run: Callable[[Redis, dict[str, str]], Awaitable[str]]  # the message of what was done


async def _requeue(conn: Redis, form: dict[str, str]) -> str:
    job = await actions.requeue(conn, form['job_id'])
    return f'Requeued job {job.id} on {job.origin}'


async def _cancel(conn: Redis, form: dict[str, str]) -> str:
    await actions.cancel(conn, form['job_id'])
    return f'Canceled job {form["job_id"]}'


async def _delete(conn: Redis, form: dict[str, str]) -> str:
    await actions.delete(conn, form['job_id'])
    return f'Deleted job {form["job_id"]}'


async def _stop(conn: Redis, form: dict[str, str]) -> str:
    worker = await actions.stop(conn, form['job_id'])
    return f'Sent stop-job for {form["job_id"]} to worker {worker}'


async def _empty(conn: Redis, form: dict[str, str]) -> str:
    n = await actions.empty_queue(conn, form['queue'])
    return f'Emptied queue {form["queue"]}: {n} jobs removed'


def _bulk_message(verb: str, form: dict[str, str], result: actions.BulkResult) -> str:
    text = f'{verb} {result.done} jobs of {form["queue"]}/{form.get("registry") or "failed"}'
    if result.skipped:
        text += f'; {result.skipped} skipped (gone, or moved by someone else)'
    if result.errors:
        text += f'; {len(result.errors)} refused: {"; ".join(result.errors[:3])}'
    return text


async def _requeue_all(conn: Redis, form: dict[str, str]) -> str:
    result = await actions.bulk_requeue(conn, form['queue'], _bulk_kind(form))
    return _bulk_message('Requeued', form, result)


async def _delete_all(conn: Redis, form: dict[str, str]) -> str:
    result = await actions.bulk_delete(conn, form['queue'], _bulk_kind(form))
    return _bulk_message('Deleted', form, result)


def _bulk_kind(form: dict[str, str]) -> str:
    kind = form.get('registry') or 'failed'
    if kind not in ('failed', 'canceled'):
        raise ValueError(f'bulk actions work on the failed or canceled registry, not {kind!r}')
    return kind


async def _suspend(conn: Redis, form: dict[str, str]) -> str:
    await actions.suspend(conn)
    return 'Workers suspended: they take no new jobs until resumed'


async def _resume(conn: Redis, form: dict[str, str]) -> str:
    await actions.resume(conn)
    return 'Workers resumed'


ACTIONS = {
    'requeue': Action('job', '', _requeue),
    'cancel': Action('job', 'Cancel job {job_id}? It will not run.', _cancel),
    'delete': Action('job', 'Delete job {job_id}, its results and executions?', _delete),
    'stop': Action('job', 'Stop job {job_id}? Its worker stops running it.', _stop),
    'empty': Action('queue', 'Empty queue {queue}? Every waiting job is deleted.', _empty),
    'requeue-all': Action('queue', 'Requeue every job of {queue}/{registry}?', _requeue_all),
    'delete-all': Action('queue', 'Delete every job of {queue}/{registry}?', _delete_all),
    'suspend': Action('', 'Suspend every worker? They take no new jobs until resumed.', _suspend),
    'resume': Action('', '', _resume),
}


class Dashboard:
    """The pages and actions over one Redis connection (see :func:`dashboard`)."""

    def __init__(self, connection: Redis, *, title: str, page_size: int, poll_interval: float) -> None:
        self.conn = connection
        self.title = title
        self.page_size = page_size
        self.poll_interval = poll_interval
        self.env = views.environment()
        kwargs = connection.connection_pool.connection_kwargs
        # Where Redis is, never with what password.
        self.redis_label = (
            f'{kwargs.get("host", kwargs.get("path", "?"))}:{kwargs.get("port", "")}/{kwargs.get("db", 0)}'
        )

    # -- rendering -------------------------------------------------------------------------------

    def base(self, request: Request) -> str:
        return str(request.scope.get('root_path', '')).rstrip('/')

    def render(self, request: Request, template: str, status: int = 200, **context: Any) -> Response:
        token, new = security.csrf_token(request)
        flash = request.cookies.get(FLASH_COOKIE)
        base = self.base(request)
        context.setdefault('live', '')
        html = self.env.get_template(template).render(
            base=base,
            title=self.title,
            csrf=token,
            flash=_read_flash(flash),
            now=time.time(),
            poll_interval=self.poll_interval,
            redis_label=self.redis_label,
            version=VERSION,
            **context,
        )
        response = HTMLResponse(html, status, headers=HEADERS)
        if new:
            security.set_csrf_cookie(response, token, base + '/')
        if flash is not None:
            response.delete_cookie(FLASH_COOKIE, path=base + '/')
        return response

    def page_args(self, request: Request) -> tuple[int, int]:
        """(page number from 1, page size) from the query, within bounds."""
        try:
            page = max(1, int(request.query_params.get('page', '1')))
            size = min(MAX_PAGE_SIZE, max(1, int(request.query_params.get('per_page', str(self.page_size)))))
        except ValueError:
            page, size = 1, self.page_size
        return page, size

    # -- pages -------------------------------------------------------------------------------------

    async def overview(self, request: Request) -> Response:
        ov = await browse.overview(self.conn, time.time())
        return self.render(request, 'overview.html', ov=ov, throughput=_throughput(ov), live='overview')

    async def live(self, request: Request) -> Response:
        """The live parts of the overview and workers pages as escaped HTML, the counts, the chart."""
        ov = await browse.overview(self.conn, time.time())
        context = dict(ov=ov, base=self.base(request), now=time.time())
        html = {
            'live-banner': self.env.get_template('_banner.html').render(context),
            'live-queues': self.env.get_template('_queues.html').render(context),
            'live-workers': self.env.get_template('_workers.html').render(context),
        }
        body = {'html': html, 'counts': ov.counts, 'throughput': _throughput(ov), 'suspended': ov.suspended}
        return JSONResponse(body, headers=HEADERS)

    async def workers(self, request: Request) -> Response:
        ov = await browse.overview(self.conn, time.time())
        return self.render(request, 'workers.html', ov=ov, live='workers')

    async def queue(self, request: Request) -> Response:
        name = request.path_params['name']
        kind = request.query_params.get('registry', 'queued')
        if kind != 'queued' and kind not in browse.KINDS:
            return self.render(request, 'message.html', 404, heading='No such registry', text=kind)
        page, size = self.page_args(request)
        listing = await browse.registry_page(self.conn, name, kind, (page - 1) * size, size)
        counts = await browse.queue_counts(self.conn, name)
        return self.render(
            request,
            'queue.html',
            name=name,
            kind=kind,
            listing=listing,
            page=page,
            size=size,
            counts=counts,
            live='queue',  # the tabs' counts
        )

    async def job(self, request: Request) -> Response:
        job_id = request.path_params['job_id']
        found = await browse.job_page(self.conn, job_id)
        if found is None:
            return self.render(request, 'message.html', 404, heading='No such job', text=job_id)
        shown, meta = views.as_json(found.hash.get('meta'))
        results = [views.result_view(i, d) for i, d in found.results]
        legacy_exc = found.hash.get('exc_info')
        return self.render(
            request,
            'job.html',
            job=found,
            meta=meta,
            meta_shown=shown,
            results=results,
            legacy_exc=views.unzip_text(legacy_exc) if legacy_exc else '',
            others=views.other_fields(found),
        )

    async def scheduled(self, request: Request) -> Response:
        items, totals = await browse.scheduled_page(self.conn, SCHEDULED_LIMIT)
        return self.render(request, 'scheduled.html', items=items, totals=totals, limit=SCHEDULED_LIMIT)

    async def cron(self, request: Request) -> Response:
        cron_jobs, schedulers, n_jobs, n_schedulers = await browse.cron_page(self.conn)
        configs = {s.name: _cron_config(s.data.get('cron_jobs', '')) for s in schedulers}
        # rq:cron_jobs names the jobs enqueued at least once; the schedulers' records name them all.
        known = {c.name for c in cron_jobs}
        for name in sorted({n for config in configs.values() for n in config} - known):
            cron_jobs.append(browse.CronJobRow(name, None, 0, []))
        return self.render(
            request,
            'cron.html',
            cron_jobs=cron_jobs,
            schedulers=schedulers,
            configs=configs,
            n_jobs=n_jobs,
            n_schedulers=n_schedulers,
        )

    async def groups(self, request: Request) -> Response:
        page, size = self.page_args(request)
        total, rows = await browse.groups_page(self.conn, (page - 1) * size, size)
        return self.render(request, 'groups.html', total=total, rows=rows, page=page, size=size)

    async def group(self, request: Request) -> Response:
        name = request.path_params['name']
        page, size = self.page_args(request)
        listing = await browse.group_page(self.conn, name, (page - 1) * size, size)
        return self.render(request, 'group.html', name=name, listing=listing, page=page, size=size)

    async def search(self, request: Request) -> Response:
        text = request.query_params.get('q', '').strip()
        job_id = text.partition(':')[0]  # an execution's "<job id>:<execution id>" names its job
        if job_id and await browse.job_exists(self.conn, job_id):
            return RedirectResponse(f'{self.base(request)}/jobs/{quote(job_id, safe="")}', 303)
        return self.render(request, 'message.html', 404, heading='No job with that id', text=text)

    # -- actions -----------------------------------------------------------------------------------

    async def action(self, request: Request) -> Response:
        form = await _form(request)
        if form is None:
            return Response('Request body too large', 413)
        if not security.csrf_ok(request, form):
            return Response('CSRF check failed: reload the page and try again', 403)
        action = ACTIONS.get(request.path_params['action'])
        if action is None:
            return Response('No such action', 404)
        missing = {'job': 'job_id', 'queue': 'queue'}.get(action.needs)
        if missing and not form.get(missing):
            return Response(f'{missing} is missing', 400)
        form.setdefault('registry', 'failed')
        if action.confirm and form.get('confirmed') != 'yes':
            question = action.confirm.format_map({'job_id': '', 'queue': '', **form})
            name = request.path_params['action']
            back = self.next_url(request, form)
            return self.render(request, 'confirm.html', question=question, form=form, action=name, back=back)
        try:
            message, kind = await action.run(self.conn, form), 'ok'
        except (InvalidJobOperation, NoSuchJobError, ValueError) as e:
            message, kind = f'{type(e).__name__}: {e}', 'error'
        response = RedirectResponse(self.next_url(request, form), 303)
        response.set_cookie(
            FLASH_COOKIE,
            quote(f'{kind}|{message}'[:2000], safe=''),
            path=self.base(request) + '/',
            httponly=True,
            samesite='strict',
        )
        return response

    def next_url(self, request: Request, form: dict[str, str]) -> str:
        """Where to go after an action: the form's ``next`` when it is a page of this dashboard."""
        base = self.base(request)
        target = form.get('next', '')
        if target.startswith(base + '/') and not target.startswith('//') and '\\' not in target:
            return target
        return base + '/'


def _read_flash(raw: str | None) -> tuple[str, str] | None:
    if not raw:
        return None
    kind, _, message = unquote(raw).partition('|')
    return (kind if kind in ('ok', 'error') else 'error'), message


async def _form(request: Request) -> dict[str, str] | None:
    """An urlencoded body as a dict (first value of each field); None when it is too large."""
    body = b''
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            return None
    return dict(reversed(parse_qsl(body.decode('utf-8', errors='replace'), keep_blank_values=True)))


def _throughput(ov: browse.Overview) -> dict[str, Any]:
    tp = ov.throughput
    return {'first_minute': tp.first_minute, 'minutes': tp.minutes, 'series': tp.series}


def _cron_config(text: str) -> dict[str, dict[str, Any]]:
    """A cron scheduler's ``cron_jobs`` field (JSON, rq's ``CronJob.to_dict`` each) by name."""
    try:
        found = json.loads(text) if text else []
    except ValueError:
        return {}
    return {str(j.get('name')): j for j in found if isinstance(j, dict)} if isinstance(found, list) else {}


Handler = Callable[[Request], Awaitable[Response]]


def _errors(handler: Handler, app: Dashboard) -> Handler:
    """Redis being unreachable is a page that says so (503), not a traceback."""

    async def handle(request: Request) -> Response:
        try:
            return await handler(request)
        except (RedisError, OSError) as e:
            return app.render(request, 'message.html', 503, heading='Redis error', text=f'{type(e).__name__}: {e}')

    return handle


def dashboard(
    connection: Redis,
    auth: security.Auth | None = None,
    *,
    title: str = 'aiorq',
    page_size: int = PAGE_SIZE,
    poll_interval: float = 2.0,
) -> ASGIApp:
    """The dashboard as an ASGI app over ``connection`` (a ``redis.asyncio.Redis`` returning bytes,
    as ``aiorq.from_url`` makes), to mount in a Starlette/FastAPI/Litestar app or serve with
    uvicorn (``aiorq dashboard`` does).

    ``auth`` is called with each request (a Starlette ``Request``) and returns, or resolves to,
    whether to serve it; refused requests get 401. :class:`aiorq.web.BasicAuth` is one such
    callable. Without ``auth`` anyone who reaches the app can use it: mount it behind your own.
    """
    if connection.connection_pool.connection_kwargs.get('decode_responses'):
        # rq's data holds binary fields (data, meta, exc_info) that such a client cannot read.
        raise ValueError('the dashboard needs a client that returns bytes (decode_responses=False), as rq does')
    app = Dashboard(connection, title=title, page_size=page_size, poll_interval=poll_interval)
    pages: list[tuple[str, Handler]] = [
        ('/', app.overview),
        ('/api/live', app.live),
        ('/workers', app.workers),
        ('/queues/{name:path}', app.queue),
        ('/jobs/{job_id:path}', app.job),
        ('/scheduled', app.scheduled),
        ('/cron', app.cron),
        ('/groups', app.groups),
        ('/groups/{name:path}', app.group),
        ('/search', app.search),
    ]
    routes: list[Any] = [Route(path, _errors(handler, app), methods=['GET']) for path, handler in pages]
    routes.append(Route('/actions/{action}', _errors(app.action, app), methods=['POST']))
    routes.append(Mount('/static', StaticFiles(directory=str(views.HERE / 'static')), name='static'))
    return security.Guard(Starlette(routes=routes), auth)
