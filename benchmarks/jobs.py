"""The benchmark's job functions (workers import them with ``--path benchmarks``)."""

from __future__ import annotations


def noop(i: int) -> int:
    """A plain function doing nothing but returning its argument (so results can be checked)."""
    return i


async def async_noop(i: int) -> int:
    """The same as a coroutine function."""
    return i
