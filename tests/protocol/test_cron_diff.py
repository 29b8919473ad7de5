"""Cron, stock rq vs aiorq: one round of ``rq.cron.CronScheduler`` on one database and of
aiorq's ``CronRunner`` on another, from the same config file, leave identical Redis states; and
stock rq's cron readers read aiorq's data."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import redis
import rq
import rq.cron
from redis.asyncio import Redis
from rq import cron_job_registry
from state import diff, snapshot

from aiorq_worker.cron import CronRunner

NAME = 'host:4242:abcdef'  # both schedulers get this name, so the keys compare

CONFIG = """
from rq import Webhook, cron

import tasks

cron.register(tasks.add, 'q', args=(1, 2), interval=30)
cron.register(
    tasks.echo,
    'q',
    args=(1,),
    kwargs={'job_timeout': 'not an option', 'meta': 'mine'},
    interval=60,
    job_timeout=90,
    result_ttl=100,
    ttl=600,
    failure_ttl=300,
    meta={'k': 'v'},
    webhooks=[Webhook('http://127.0.0.1:9/hook', 'finished', headers={'X': '1'})],
    name='echo-with-options',
)
cron.register(tasks.async_add, 'other', args=(3, 4), interval=10)
cron.register(tasks.summator, 'q', args=(1, 2, 3), cron='0 0 1 1 *')  # not due this round
"""


@pytest.fixture
def config(tmp_path: Path) -> str:
    path = tmp_path / 'diff_cron_config.py'
    path.write_text(CONFIG)
    return str(path)


@pytest.fixture(autouse=True)
def quiet_rq_cron() -> Any:
    # CronScheduler() attaches its own stdout handler to 'rq.cron' unless one exists.
    logger = logging.getLogger('rq.cron')
    handler = logging.NullHandler()
    logger.addHandler(handler)
    yield
    logger.removeHandler(handler)


def _history_ids(conn: redis.Redis) -> dict[str, list[str]]:
    return {
        name: rq.cron.get_cron_job_ids(name, conn)
        for name in sorted(n.decode() for n in conn.zrange(cron_job_registry.get_registry_key(), 0, -1))
    }


def _normalised(conn: redis.Redis, ids: dict[str, str]) -> dict[Any, Any]:
    """The snapshot, with the times inside the scheduler record's ``cron_jobs`` JSON masked."""
    snap = snapshot(conn, ids)
    for key, (kind, ttl, content) in list(snap.items()):
        if key.startswith(b'rq:cron_scheduler:') and b'cron_jobs' in content:
            jobs = json.loads(content[b'cron_jobs'])
            for job in jobs:
                for field in ('latest_enqueue_time', 'next_enqueue_time'):
                    if job[field] is not None:
                        job[field] = '<ts>'
            snap[key] = (kind, ttl, {**content, b'cron_jobs': jobs})
    return snap


def _compare(rq_conn: redis.Redis, aiorq_sync: redis.Redis) -> None:
    rq_ids, ai_ids = _history_ids(rq_conn), _history_ids(aiorq_sync)
    assert rq_ids.keys() == ai_ids.keys()
    mapping_rq: dict[str, str] = {}
    mapping_ai: dict[str, str] = {}
    for name in rq_ids:
        assert len(rq_ids[name]) == len(ai_ids[name]), name
        for i, (x, y) in enumerate(zip(rq_ids[name], ai_ids[name])):
            mapping_rq[x] = mapping_ai[y] = f'{name}-ID{i}'
    before, after = _normalised(rq_conn, mapping_rq), _normalised(aiorq_sync, mapping_ai)
    assert any(k.startswith(b'rq:cron_') for k in before), 'nothing to compare'
    problems = diff(before, after)
    assert not problems, 'aiorq left a different state than rq:\n' + '\n'.join(problems)


async def test_one_round_writes_what_rq_cron_writes(
    config: str, rq_conn: redis.Redis, aconn: Redis, aiorq_sync: redis.Redis
) -> None:
    # rq: what CronScheduler.start does before its first sleep.
    stock = rq.cron.CronScheduler(connection=rq_conn, name=NAME)
    stock.load_config_from_file(config)
    stock.register_birth()
    assert len(stock.enqueue_jobs()) == 3
    stock.save()
    stock.heartbeat()

    runner = CronRunner(aconn, config, name=NAME)
    await runner.start()
    assert len(await runner.tick()) == 3
    await runner.heartbeat()

    assert rq_conn.llen('rq:queue:q') == 2 and rq_conn.llen('rq:queue:other') == 1
    _compare(rq_conn, aiorq_sync)

    # The record expired (a host asleep past its TTL): the next heartbeat re-creates it.
    rq_conn.delete(stock.key)
    aiorq_sync.delete(stock.key)
    stock.heartbeat()
    await runner.heartbeat()
    _compare(rq_conn, aiorq_sync)

    stock.register_death()
    await runner.shutdown()
    _compare(rq_conn, aiorq_sync)
    assert aiorq_sync.zcard('rq:cron_schedulers') == 0
    assert aiorq_sync.exists(stock.key)  # left to expire, as rq does


async def test_stock_readers_read_aiorq_data(config: str, aconn: Redis, aiorq_sync: redis.Redis) -> None:
    runner = CronRunner(aconn, config, name=NAME)
    await runner.start()
    enqueued = await runner.tick()
    await runner.heartbeat()

    [scheduler] = rq.cron.CronScheduler.all(aiorq_sync)
    assert (scheduler.name, scheduler.config_file, scheduler.pid) == (NAME, config, runner.pid)
    assert scheduler.last_heartbeat is not None
    by_name = {job.name: job for job in scheduler.get_jobs()}
    assert set(by_name) == {'tasks.add', 'echo-with-options', 'tasks.async_add', 'tasks.summator'}
    echo = by_name['echo-with-options']
    assert (echo.func_name, echo.queue_name, echo.interval, echo.args) == ('tasks.echo', 'q', 60, (1,))
    assert echo.kwargs == {'job_timeout': 'not an option', 'meta': 'mine'}
    assert echo.job_options['meta'] == {'k': 'v'} and echo.job_options['job_timeout'] == 90
    assert echo.latest_enqueue_time is not None and echo.next_enqueue_time is not None
    summator = by_name['tasks.summator']
    assert summator.cron == '0 0 1 1 *' and summator.latest_enqueue_time is None

    assert sorted(cron_job_registry.get_names(aiorq_sync)) == ['echo-with-options', 'tasks.add', 'tasks.async_add']
    for item in enqueued:
        assert rq.cron.get_cron_job_ids(item.cron_job.name, aiorq_sync) == [item.job_id]
        job = rq.job.Job.fetch(item.job_id, connection=aiorq_sync)
        assert job.func_name == item.cron_job.func_name
        assert job.origin == item.cron_job.queue_name
        assert job.get_status() == rq.job.JobStatus.QUEUED
    job = rq.job.Job.fetch(next(i.job_id for i in enqueued if i.cron_job.name == 'echo-with-options'), aiorq_sync)
    assert (job.args, job.kwargs, job.timeout, job.result_ttl, job.ttl, job.failure_ttl) == (
        (1,),
        {'job_timeout': 'not an option', 'meta': 'mine'},
        90,
        100,
        600,
        300,
    )
    add = rq.job.Job.fetch(next(i.job_id for i in enqueued if i.cron_job.name == 'tasks.add'), aiorq_sync)
    assert (add.result_ttl, add.timeout) == (500, rq.Queue.DEFAULT_TIMEOUT)
    assert sorted(q.name for q in rq.Queue.all(connection=aiorq_sync)) == ['other', 'q']
