"""Failed jobs of an aiorq worker reported to Sentry, configured in code: ``python examples/observability_sentry.py``.

Needs ``pip install 'aiorq[sentry]'`` and ``SENTRY_DSN`` (https://<key>@<org>.ingest.sentry.io/<project>).
Redis: ``$REDIS_URL``, else redis://127.0.0.1:6399/0.
"""

from __future__ import annotations

import asyncio
import os

from mylib import divide
from redis.asyncio import Redis

from aiorq import Queue
from aiorq_worker import Worker
from aiorq_worker.sentry import register_sentry

REDIS_URL = os.environ.get('REDIS_URL', 'redis://127.0.0.1:6399/0')


async def main() -> None:
    handler = register_sentry(os.environ['SENTRY_DSN'], environment='production')
    redis = Redis.from_url(REDIS_URL)
    job = await Queue('default', connection=redis).enqueue(divide, 1, 0)
    worker = Worker('default', connection=redis, exception_handlers=[handler])
    await worker.work(burst=True)
    status = await job.get_status()
    print(f'job {job.id}: {status.value}, reported to Sentry')
    await redis.aclose()


if __name__ == '__main__':
    asyncio.run(main())  # sentry-sdk sends what is left when the process exits
