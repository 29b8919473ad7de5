"""Driving stock rq and aiorq through the same scenario and comparing what each leaves in Redis.

A scenario is one ``async def scenario(lib, conn)`` written once: ``lib`` is the ``rq`` or the
``aiorq`` module, ``conn`` a blocking or an async client, and every call goes through
:func:`a`, which awaits aiorq's coroutines and passes rq's plain values through.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import redis
import rq
import rq.decorators
import tasks
from redis.asyncio import Redis
from state import diff, renamed, snapshot

import aiorq

Scenario = Callable[[Any, Any], Awaitable[Any]]


async def a(value: Any) -> Any:
    """Await aiorq's result; return rq's as is."""
    if inspect.isawaitable(value):
        return await value
    return value


def decorator_of(lib: Any) -> Any:
    """``rq.decorators.job`` or ``aiorq.job``."""
    return rq.decorators.job if lib is rq else aiorq.job


def _drop(snap: dict[Any, Any], prefixes: tuple[bytes, ...]) -> dict[Any, Any]:
    return {k: v for k, v in snap.items() if not k.startswith(prefixes)}


async def compare(
    scenario: Scenario,
    rq_conn: redis.Redis,
    aconn: Redis,
    aiorq_sync: redis.Redis,
    *,
    setup: Callable[[redis.Redis], Any] | None = None,
    ignore: tuple[bytes, ...] = (),
) -> tuple[Any, Any]:
    """Run ``scenario`` with rq on one database and aiorq on another; assert equal state.

    ``setup`` prepares both databases identically, with stock rq, before the scenario runs.
    Each side runs and is read back in one stretch (setup, scenario, snapshot), so that its
    TTLs and clock-relative scores age by its own run only, however long the other side took.
    """
    if setup is not None:
        setup(rq_conn)
    rq_result = await scenario(rq, rq_conn)
    rq_snap = snapshot(rq_conn)
    if setup is not None:
        setup(aiorq_sync)
    aiorq_result = await scenario(aiorq, aconn)
    aiorq_snap = snapshot(aiorq_sync)
    ids: dict[str, str] = {}
    for i, (x, y) in enumerate(_ids(rq_result, aiorq_result)):
        ids[x] = f'ID{i}'
        ids[y] = f'ID{i}'
    rq_ids = {k: v for k, v in ids.items() if k in _flat(rq_result)}
    ai_ids = {k: v for k, v in ids.items() if k in _flat(aiorq_result)}
    before = _drop(renamed(rq_snap, rq_ids), ignore)
    after = _drop(renamed(aiorq_snap, ai_ids), ignore)
    problems = diff(before, after)
    assert not problems, 'aiorq left a different state than rq:\n' + '\n'.join(problems)
    assert before, 'the scenario wrote nothing: the comparison would prove nothing'
    return rq_result, aiorq_result


def _flat(result: Any) -> list[str]:
    if isinstance(result, (list, tuple)):
        return [i for r in result for i in _flat(r)]
    if isinstance(result, (rq.job.Job, aiorq.Job)):
        return [result.id]
    return []


def _ids(rq_result: Any, aiorq_result: Any) -> list[tuple[str, str]]:
    """Pairs of generated ids, for results that are jobs or lists of jobs."""
    return [(x, y) for x, y in zip(_flat(rq_result), _flat(aiorq_result)) if x != y]


def all_enqueue_options(job_id: str) -> dict[str, Any]:
    """rq's enqueue options, each set to a value other than its default (differential tests)."""
    return dict(
        job_id=job_id,
        job_timeout='1h',
        result_ttl=100,
        ttl=60,
        failure_ttl=300,
        description='described',
        meta={'progress': 0},
        retry=rq.Retry(max=3, interval=[10, 20]),
        repeat=rq.Repeat(times=2, interval=[0, 60]),
        on_success=rq.Callback(tasks.on_success_cb, timeout=5),
        on_failure=rq.Callback(tasks.on_failure_cb),
        on_stopped=tasks.on_stopped_cb,
        webhooks=[rq.Webhook('http://127.0.0.1:9/hook', 'finished', headers={'X': '1'})],
    )
