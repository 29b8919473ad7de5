"""Quick start: enqueue mylib.add(1, 2) with aiorq and print the result a worker wrote (README.md)."""

import asyncio
import os

import mylib  # examples/mylib.py: the worker imports it too (aiorq worker --path examples)

import aiorq


async def main() -> None:
    redis = aiorq.from_url(os.environ.get('REDIS_URL', 'redis://127.0.0.1:6399/0'))
    queue = aiorq.Queue('my_queue', connection=redis)
    job = await queue.enqueue(mylib.add, 1, 2)
    result = await job.latest_result(timeout=10)  # waits until a worker has run the job
    print(result.return_value if result else 'no worker answered within 10 s')
    await redis.aclose()


asyncio.run(main())
