"""The one retry delay of the worker: waits that double from a first delay up to a cap."""

from __future__ import annotations

from aiorq.protocol.defaults import BACKOFF_CAP


class Backoff:
    """``next()`` gives the wait to use now and doubles the one after (up to ``cap``);
    ``reset()`` after a success starts again from ``first``."""

    def __init__(self, first: float = 1.0, cap: float = BACKOFF_CAP) -> None:
        self.first = first
        self.cap = cap
        self.delay = first

    def next(self) -> float:
        delay = self.delay
        self.delay = min(delay * 2, self.cap)
        return delay

    def reset(self) -> None:
        self.delay = self.first
