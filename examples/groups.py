"""Groups and results: enqueue three jobs as one ``aiorq.Group``, then read each ``aiorq.Result``.

The code of ``docs/groups.md`` (the tests check that its blocks are taken from here). Run a stock
worker beside it::

    rq worker --path examples --url redis://127.0.0.1:6379/0 my_queue
    python examples/groups.py --url redis://127.0.0.1:6379/0

Exits 0 when the three results add up to 21, 1 when one is wrong or missing after ``--timeout`` seconds.
"""

from __future__ import annotations

import sys

import mylib
from _cli import run

import aiorq
from aiorq import Group, Queue, Result


async def main(url: str, timeout: float) -> int:
    redis = aiorq.from_url(url)
    try:
        queue = Queue('my_queue', connection=redis)
        group = Group(connection=redis)  # the name defaults to a fresh uuid4().hex
        jobs = await group.enqueue_many(
            queue,
            [
                queue.prepare_data(mylib.add, (1, 2)),
                queue.prepare_data(mylib.add, (3, 4)),
                queue.prepare_data(mylib.add, (5, 6)),
            ],
        )

        total = 0
        for job in jobs:
            result = await Result.fetch_latest(job, timeout=timeout)  # waits while there is none
            if result is None or result.type != Result.Type.SUCCESSFUL:
                print(f'job {job.id}: {result!r}', file=sys.stderr)
                return 1
            total += result.return_value

        same_group = await Group.fetch(group.name, connection=redis)  # NoSuchGroupError if gone
        members = await same_group.get_jobs()  # drops members whose job expired
        print(f'{len(members)} jobs in {same_group!r}, results add up to {total}')
        return 0 if total == 21 else 1
    finally:
        await redis.aclose()


if __name__ == '__main__':
    run('Enqueue a group of three jobs and read their results.', main)
