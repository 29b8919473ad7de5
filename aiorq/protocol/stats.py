"""Throughput history: jobs finished and failed per queue per minute, for the dashboard's chart.

rq keeps no such history, so aiorq workers write it in keys of aiorq's own, which stock rq never
reads: one hash per minute, ``<rq prefix>:aiorq:throughput:<minute>`` (``rq:aiorq:throughput:…``;
``<minute>`` is Unix time // 60), with a field ``<kind>:<queue>`` (``finished:default``,
``failed:default``) holding the count. Each hash expires :data:`TTL` seconds after its last
write, so at most about 120 of them exist however long the fleet runs: two fields per queue per
minute, nothing that grows by the day.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rq.utils import as_text

from . import keys

KEY_PREFIX = keys.THROUGHPUT_PREFIX
KINDS = ('finished', 'failed')
TTL = 7200  # two hours: the chart shows one
MINUTES = 60  # what the dashboard shows

# (minute, queue name, kind) -> how many jobs ended so
Counts = Mapping[tuple[int, str, str], int]


def minute_of(timestamp: float) -> int:
    return int(timestamp // 60)


def field_name(kind: str, queue_name: str) -> str:
    """The hash field of one queue's count of one kind (the kind first: queue names may hold ``:``)."""
    if kind not in KINDS:
        raise ValueError(f'kind must be one of {KINDS}, not {kind!r}')
    return f'{kind}:{queue_name}'


def buffer_counts(pipe: Any, counts: Counts) -> None:
    """``HINCRBY`` each count into its minute's hash, then ``EXPIRE`` each hash touched. Pure:
    the pipeline gets the commands, nothing is read or sent."""
    minutes: list[int] = []
    for (minute, queue_name, kind), n in sorted(counts.items()):
        if n <= 0:
            continue
        pipe.hincrby(keys.throughput(minute), field_name(kind, queue_name), n)
        if not minutes or minutes[-1] != minute:
            minutes.append(minute)
    for minute in minutes:
        pipe.expire(keys.throughput(minute), TTL)



async def write_counts(conn: Any, counts: Counts) -> None:
    """Write the counts in one ``MULTI`` (:func:`buffer_counts`); raises what Redis raises."""
    async with conn.pipeline(transaction=True) as pipe:
        buffer_counts(pipe, counts)
        await pipe.execute()

@dataclass
class Throughput:
    """Counts per queue and kind, one per minute from ``first_minute`` on (oldest first)."""

    first_minute: int
    minutes: int
    series: dict[str, dict[str, list[int]]] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        """No history at all (no aiorq worker wrote any: a stock rq fleet, or nothing ran)."""
        return not self.series

    def totals(self, kind: str) -> list[int]:
        """One kind summed over every queue, per minute."""
        out = [0] * self.minutes
        for by_kind in self.series.values():
            for i, n in enumerate(by_kind.get(kind, ())):
                out[i] += n
        return out


def parse_throughput(rows: Iterable[tuple[int, Mapping[str, Any]]], first_minute: int, minutes: int) -> Throughput:
    """The minute hashes read back (``(minute, {field: count})``) as series; fields that are
    not aiorq's (or counts that are not integers) are left out."""
    result = Throughput(first_minute, minutes)
    for minute, data in rows:
        index = minute - first_minute
        if not 0 <= index < minutes:
            continue
        for name, value in data.items():
            kind, _, queue_name = as_text(name).partition(':')
            if kind not in KINDS or not queue_name:
                continue
            try:
                n = int(value)
            except ValueError:
                continue
            by_kind = result.series.setdefault(queue_name, {k: [0] * minutes for k in KINDS})
            by_kind[kind][index] += n
    result.series = dict(sorted(result.series.items()))
    return result


def minute_keys(first_minute: int, minutes: int) -> Sequence[str]:
    return [keys.throughput(m) for m in range(first_minute, first_minute + minutes)]
