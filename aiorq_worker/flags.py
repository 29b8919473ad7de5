"""The worker's run state that several parts read and a few write: stop requests and suspension."""

from __future__ import annotations

from dataclasses import dataclass

from rq.worker import WorkerStatus


@dataclass
class Flags:
    """Written by the worker (signals, commands: the stops) and admission (suspension); read by
    admission, the runner and the state clock."""

    stop_requested: bool = False  # warm shutdown: admit nothing more
    cold_shutdown: bool = False  # the executions in flight are being cancelled
    suspended: bool = False  # ``rq suspend`` is in force

    def idle_state(self) -> str:
        """The state to show while no execution runs (``busy`` is decided from the executions index)."""
        return WorkerStatus.SUSPENDED.value if self.suspended else WorkerStatus.IDLE.value
