"""Runs an arq, a saq or a streaQ worker for ``benchmarks/suite.py``, on asyncio's or uvloop's loop.

    python benchmarks/suite_worker.py {arq,saq,streaq} --url URL --queue NAME --kind {async,plain}
        --concurrency C [--burst] [--loop {asyncio,uvloop}]

``--loop uvloop`` runs the worker's coroutine on a uvloop loop (``uvloop.run``; streaQ: anyio's
``loop_factory=uvloop.new_event_loop``), ``asyncio`` (the default) on asyncio's own.

arq: ``arq.worker.Worker(max_jobs=C, poll_delay=0.01, burst=...)`` (arq's default poll delay is
0.5 s; with it every burst run and every latency sample would be dominated by the poll), built on
the running loop and run with ``async_run`` then ``close`` (what ``Worker.run`` does on the loop it
finds); the queue name is arq's default, ``arq:queue``. arq only accepts coroutine functions, so
``--kind plain`` is refused.

saq: ``saq.Worker(queue, concurrency=C, burst=..., dequeue_timeout=0.1)`` started as saq's own
``saq.worker.start`` does (``queue.connect()``, ``worker.start()``, ``queue.disconnect()``). In
burst mode saq stops once a dequeue waited ``dequeue_timeout`` (0.1 s) on an empty queue, after the
jobs in flight finished. Plain functions run in saq's ``ThreadPoolExecutor`` (default size).

streaQ: ``streaq.Worker(concurrency=C)`` of ``suite_streaq.make_worker`` run as ``streaq run
[--burst]`` runs it (``worker.burst = ...``, ``anyio.run(worker.run_async)``); plain functions run
in streaQ's worker threads (``sync_concurrency`` = C, its default).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import suite_jobs  # noqa: E402
from suite_core import run_on  # noqa: E402

SAQ_DEQUEUE_TIMEOUT = 0.1
ARQ_POLL_DELAY = 0.01


def run_arq(url: str, kind: str, concurrency: int, burst: bool, loop: str) -> None:
    from arq.connections import RedisSettings
    from arq.worker import Worker

    if kind != 'async':
        raise SystemExit('arq runs coroutine functions only')

    async def main() -> None:
        worker = Worker(
            functions=[suite_jobs.arq_async_noop],
            redis_settings=RedisSettings.from_dsn(url),
            burst=burst,
            max_jobs=concurrency,
            poll_delay=ARQ_POLL_DELAY,
            keep_result=3600,
        )
        try:
            await worker.async_run()
        except asyncio.CancelledError:  # SIGTERM: arq cancels its main task (Worker.run ignores that too)
            pass
        finally:
            await worker.close()

    run_on(loop, main)


def run_saq(url: str, queue_name: str, kind: str, concurrency: int, burst: bool, loop: str) -> None:
    from saq import Queue, Worker

    func = suite_jobs.saq_async_noop if kind == 'async' else suite_jobs.saq_noop

    async def main() -> None:
        queue = Queue.from_url(url, name=queue_name)
        worker = Worker(
            queue,
            [func],
            concurrency=concurrency,
            burst=burst,
            dequeue_timeout=SAQ_DEQUEUE_TIMEOUT if burst else 0.0,
        )
        try:
            await queue.connect()
            await worker.start()
        finally:
            await queue.disconnect()

    run_on(loop, main)


def run_streaq(url: str, queue_name: str, concurrency: int, burst: bool, loop: str) -> None:
    import anyio
    from suite_streaq import make_worker

    worker, _, _ = make_worker(url, concurrency, queue_name)
    worker.burst = burst
    options: dict[str, Any] = {}
    if loop == 'uvloop':
        import uvloop

        options['loop_factory'] = uvloop.new_event_loop
    anyio.run(worker.run_async, backend='asyncio', backend_options=options)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('system', choices=['arq', 'saq', 'streaq'])
    parser.add_argument('--url', required=True)
    parser.add_argument('--queue', default='bench')
    parser.add_argument('--kind', choices=['async', 'plain'], default='async')
    parser.add_argument('--concurrency', type=int, default=100)
    parser.add_argument('--burst', action='store_true')
    parser.add_argument('--loop', choices=['asyncio', 'uvloop'], default='asyncio')
    args = parser.parse_args(argv)
    if args.system == 'arq':
        run_arq(args.url, args.kind, args.concurrency, args.burst, args.loop)
    elif args.system == 'saq':
        run_saq(args.url, args.queue, args.kind, args.concurrency, args.burst, args.loop)
    else:
        run_streaq(args.url, args.queue, args.concurrency, args.burst, args.loop)
    return 0


if __name__ == '__main__':
    sys.exit(main())
