"""A Starlette app that enqueues from a request handler and awaits the job's result (no polling).

``POST /add`` with ``{"a": 1, "b": 2}`` enqueues ``mylib.add(1, 2)`` and answers with its result:
``await job.latest_result(timeout=...)`` blocks on the job's results stream until a worker
writes to it (504 if none does in time). ``GET /jobs/<id>`` answers at once with the status.

Run by hand, it serves one request through httpx's ASGI transport with an in-process worker
(``aiorq.testing.worker_running``)::

    python examples/starlette_app.py --url redis://127.0.0.1:6379/0

Under a server, build the app with a client of your Redis, e.g. in a module of your own
``app = create_app(aiorq.from_url(url))``, and run ``aiorq worker --path examples my_queue``.
"""

from __future__ import annotations

import sys

import httpx
import mylib
from _cli import run
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import aiorq
from aiorq import Job, Queue, Result
from aiorq.testing import worker_running

WAIT = 10.0  # seconds a request waits for its job's result


def create_app(redis: Redis, wait: float = WAIT) -> Starlette:
    """The app, on a client the caller owns (and closes)."""
    queue = Queue('my_queue', connection=redis)

    async def add(request: Request) -> JSONResponse:
        body = await request.json()
        job = await queue.enqueue(mylib.add, int(body['a']), int(body['b']))
        latest = await job.latest_result(timeout=wait)  # a blocking read of the results stream
        if latest is None:
            return JSONResponse({'job': job.id, 'status': 'queued'}, status_code=504)
        if latest.type != Result.Type.SUCCESSFUL:
            return JSONResponse({'job': job.id, 'error': latest.exc_string}, status_code=500)
        return JSONResponse({'job': job.id, 'result': latest.return_value})

    async def status(request: Request) -> JSONResponse:
        job = await queue.fetch_job(request.path_params['job_id'])
        if job is None:
            return JSONResponse({'error': 'no such job'}, status_code=404)
        state = await job.get_status()
        return JSONResponse({'job': job.id, 'status': state and state.value, 'result': await job.result})

    return Starlette(routes=[Route('/add', add, methods=['POST']), Route('/jobs/{job_id}', status)])


async def main(url: str, timeout: float) -> int:
    redis = aiorq.from_url(url)
    try:
        app = create_app(redis, wait=timeout)
        transport = httpx.ASGITransport(app=app)
        async with (
            worker_running('my_queue', redis),
            httpx.AsyncClient(transport=transport, base_url='http://app') as client,
        ):
            reply = await client.post('/add', json={'a': 1, 'b': 2})
            print(reply.status_code, reply.json())
            if reply.status_code != 200 or reply.json()['result'] != 3:
                return 1
            job = await Job.fetch(reply.json()['job'], connection=redis)
            state = (await client.get(f'/jobs/{job.id}')).json()
            print(state)
        if state != {'job': job.id, 'status': 'finished', 'result': 3}:
            print(f'unexpected job state {state}', file=sys.stderr)
            return 1
        return 0
    finally:
        await redis.aclose()


if __name__ == '__main__':
    run('Serve one request of a Starlette app that enqueues and awaits the result.', main)
