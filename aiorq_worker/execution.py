"""One execution as the worker holds it: an attempt at a job, from its claim to its outcome."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from rq.job import Job as RQJob

from aiorq.protocol.dequeue import Claimed
from aiorq.protocol.workers import Beat


@dataclass(eq=False)
class Execution:
    """A job this worker started (see ``protocol.dequeue.Claimed``), plus what the worker learns
    while it runs: whether a stop command ended it, and room for listeners' notes."""

    job: RQJob
    queue: str
    id: str
    created_at: float  # epoch seconds, the execution record's ``created_at``
    started_at: datetime | None = None
    stopped: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def claimed(cls, claim: Claimed) -> Execution:
        return cls(claim.job, claim.queue, claim.id, claim.created_at, started_at=claim.started_at)

    @property
    def member(self) -> str:
        """``<job id>:<execution id>``: its member in the started registry and the worker's index."""
        return f'{self.job.id}:{self.id}'

    def beat(self) -> Beat:
        """What the heartbeat thread needs of it (read once, on the thread that asks)."""
        return Beat(self.job.id, self.id, self.queue, self.started_at, self.job.timeout)
