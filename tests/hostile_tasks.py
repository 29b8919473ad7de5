"""Jobs that try to kill, stall or poison the worker that runs them (tests/worker/test_isolation.py)."""

from __future__ import annotations

import asyncio
import os
import sys
import time


def exit_in_thread(code: int) -> None:
    sys.exit(code)


def interrupt_in_thread() -> None:
    raise KeyboardInterrupt


async def exit_in_coroutine() -> None:
    await asyncio.sleep(0)
    raise SystemExit(4)


async def interrupt_in_coroutine() -> None:
    raise KeyboardInterrupt


async def spin_forever() -> None:
    """Holds the loop without end: ``while True: pass``."""
    while True:
        pass


async def sleep_on_loop(seconds: float) -> float:
    """Holds the loop in a blocking call: ``time.sleep`` inside a coroutine."""
    time.sleep(seconds)
    return seconds


def _spin_until(end: float) -> None:
    while time.monotonic() < end:
        pass


async def spin_ignoring_timeouts(seconds: float) -> float:
    """Holds the loop for ``seconds``, swallowing every exception raised into it. (The spin is a
    call of its own: CPython 3.13.0 does not let a coroutine frame catch what a signal handler
    raised in that same frame.)"""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            _spin_until(end)
        except BaseException:
            pass
    return seconds


def big_result(size: int) -> bytes:
    return os.urandom(size)


def note_span(path: str, seconds: float) -> float:
    """A plain function that appends its start and end times to ``path`` and sleeps between."""
    with open(path, 'a') as f:
        f.write(f'start {time.time()}\n')
    time.sleep(seconds)
    with open(path, 'a') as f:
        f.write(f'end {time.time()}\n')
    return seconds


def hold_until_released() -> str:
    """A plain function that waits (in its thread) until someone sets the key ``release``."""
    import rq

    job = rq.get_current_job()
    assert job is not None
    while not job.connection.get('release'):
        time.sleep(0.02)
    return 'released'


async def raise_cancelled() -> None:
    """Raises CancelledError of its own accord (as awaiting a future someone cancelled does)."""
    await asyncio.sleep(0)
    raise asyncio.CancelledError
