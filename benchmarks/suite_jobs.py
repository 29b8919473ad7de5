"""Job functions of ``benchmarks/suite.py`` (workers import them with ``--path benchmarks``).

Every function returns its argument so that the suite can check each job's result. arq passes a
context dict as the first argument and saq passes one as well (with the job's arguments as keyword
arguments), hence their own variants.
"""

from __future__ import annotations

import asyncio
from typing import Any


def noop(i: int) -> int:
    """A plain (sync) no-op."""
    return i


async def async_noop(i: int) -> int:
    """An ``async def`` no-op."""
    return i


async def sleep_100ms(i: int) -> int:
    """An I/O-bound job: 100 ms of ``asyncio.sleep``."""
    await asyncio.sleep(0.1)
    return i


async def arq_async_noop(ctx: dict[str, Any], i: int) -> int:
    """arq's signature: ``ctx`` first."""
    return i


async def saq_async_noop(ctx: dict[str, Any], *, i: int) -> int:
    """saq's signature: ``ctx`` first, the job's arguments as keywords."""
    return i


def saq_noop(ctx: dict[str, Any], *, i: int) -> int:
    """A plain function for saq (it runs those in a ``ThreadPoolExecutor``)."""
    return i
