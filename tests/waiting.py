"""Waiting in tests for a condition that another task or process makes true."""

from __future__ import annotations

import asyncio
import time
from typing import Any


async def wait_for(predicate: Any, timeout: float = 10, interval: float = 0.02) -> None:
    """Poll ``predicate`` (plain or returning a coroutine) until truthy, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        await asyncio.sleep(interval)
    raise AssertionError('condition not met in time')
