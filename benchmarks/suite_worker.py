"""Runs an arq or a saq worker for ``benchmarks/suite.py`` (both on asyncio's default event loop).

    python benchmarks/suite_worker.py {arq,saq} --url URL --queue NAME --kind {async,plain}
        --concurrency C [--burst]

arq: ``arq.worker.Worker(max_jobs=C, poll_delay=0.01, burst=...)`` (arq's default poll delay is
0.5 s; with it every burst run and every latency sample would be dominated by the poll); the queue
name is arq's default, ``arq:queue``. arq only accepts coroutine functions, so ``--kind plain`` is
refused.

saq: ``saq.Worker(queue, concurrency=C, burst=..., dequeue_timeout=0.1)`` started as saq's own
``saq.worker.start`` does (``queue.connect()``, ``worker.start()``, ``queue.disconnect()``). In
burst mode saq stops once a dequeue waited ``dequeue_timeout`` (0.1 s) on an empty queue, after the
jobs in flight finished. Plain functions run in saq's ``ThreadPoolExecutor`` (default size).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import suite_jobs  # noqa: E402

SAQ_DEQUEUE_TIMEOUT = 0.1
ARQ_POLL_DELAY = 0.01


def run_arq(url: str, kind: str, concurrency: int, burst: bool) -> None:
    from arq.connections import RedisSettings
    from arq.worker import Worker

    if kind != 'async':
        raise SystemExit('arq runs coroutine functions only')
    worker = Worker(
        functions=[suite_jobs.arq_async_noop],
        redis_settings=RedisSettings.from_dsn(url),
        burst=burst,
        max_jobs=concurrency,
        poll_delay=ARQ_POLL_DELAY,
        keep_result=3600,
    )
    worker.run()


def run_saq(url: str, queue_name: str, kind: str, concurrency: int, burst: bool) -> None:
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

    asyncio.run(main())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('system', choices=['arq', 'saq'])
    parser.add_argument('--url', required=True)
    parser.add_argument('--queue', default='bench')
    parser.add_argument('--kind', choices=['async', 'plain'], default='async')
    parser.add_argument('--concurrency', type=int, default=100)
    parser.add_argument('--burst', action='store_true')
    args = parser.parse_args(argv)
    if args.system == 'arq':
        run_arq(args.url, args.kind, args.concurrency, args.burst)
    else:
        run_saq(args.url, args.queue, args.kind, args.concurrency, args.burst)
    return 0


if __name__ == '__main__':
    sys.exit(main())
