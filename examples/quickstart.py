"""Quick start: enqueue mylib.add(1, 2) with aiorq and print the result a worker wrote (README.md)."""

import asyncio
import os

import mylib  # examples/mylib.py: the worker imports it too (aiorq worker --path examples)

import aiorq


async def main() -> None:
    redis = aiorq.from_url(os.environ.get('REDIS_URL', 'redis://127.0.0.1:6399/0'))
    queue = aiorq.Queue('my_queue', connection=redis)
    add = aiorq.job(queue)(mylib.add)  # a typed task: `@aiorq.job(queue)` on mylib.add's def does the same
    job = await add.delay(1, 2)  # a Job[int]; add.delay(1, '2') is a type error (mypy, pyright)
    print(await job.wait(timeout=10))  # waits until a worker has run the job: 3
    await redis.aclose()


asyncio.run(main())
