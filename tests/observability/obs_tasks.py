"""Jobs for the observability tests (importable by worker subprocesses through PYTHONPATH)."""

from __future__ import annotations

import asyncio

from opentelemetry import trace


async def hold(key: str) -> str:
    """Run until ``key`` exists in Redis: a test decides when this job ends."""
    import aiorq

    job = aiorq.get_current_job()
    assert job is not None
    while not await job.connection.exists(key):
        await asyncio.sleep(0.02)
    return key


def traced_child() -> str:
    """A plain function opening its own span: it must nest under the execution span."""
    with trace.get_tracer('obs_tasks').start_as_current_span('inside the job'):
        return 'ok'
