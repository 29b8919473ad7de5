"""Turning what the protocol layer read into what the pages show: times, durations, function
names, meta and results decoded only where that runs no serializer (JSON, zlib'd text)."""

from __future__ import annotations

import base64
import binascii
import json
import re
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from rq.results import Result

from aiorq.protocol import browse
from aiorq.protocol.codec import parse_date

HERE = Path(__file__).resolve().parent
TRACEBACK_LIMIT = 1_000_000  # most characters of a traceback shown (a zlib bomb stops there)
NOT_SHOWN = 'not shown: not JSON (the dashboard never unpickles)'

# rq's description of a job it made: ``module.function(args…)`` (``get_call_string``).
_CALL = re.compile(r'([A-Za-z_][\w.]*)\(')
_RESULT_TYPES = {str(t.value): t.name.lower().replace('_', ' ') for t in Result.Type}


def function_of(description: str | None) -> str:
    """The function named by rq's call string, else the description itself."""
    if not description:
        return '?'
    m = _CALL.match(description)
    return m.group(1) if m else description


def to_datetime(value: Any) -> datetime | None:
    """A job hash timestamp (rq's text format) or a Unix time (float) as an aware datetime."""
    if value is None or value == '' or value == b'':
        return None
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, timezone.utc)
    try:
        return parse_date(value)
    except ValueError:
        return None


def when(value: Any) -> str:
    moment = to_datetime(value)
    return moment.strftime('%Y-%m-%d %H:%M:%S UTC') if moment else ''


def duration(seconds: float | None) -> str:
    if seconds is None:
        return ''
    sign, seconds = ('-' if seconds < 0 else ''), abs(seconds)
    if seconds < 60:
        return f'{sign}{seconds:.1f}s'
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f'{sign}{minutes}m{secs:02d}s'
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f'{sign}{hours}h{minutes:02d}m'
    return f'{sign}{hours // 24}d{hours % 24:02d}h'


def ago(value: Any, now: float) -> str:
    """``3m12s ago`` or ``in 5m00s``."""
    moment = to_datetime(value)
    if moment is None:
        return ''
    delta = now - moment.timestamp()
    return f'{duration(delta)} ago' if delta >= 0 else f'in {duration(-delta)}'


def score_time(score: float | None) -> str:
    """A registry score as a time (``never`` for ``+inf``, the raw number when it is no time)."""
    if score is None:
        return ''
    if score == float('inf'):
        return 'never'
    if score < 10**8:
        return f'{score:g}'
    return when(score)


def quoted(value: Any) -> str:
    """One URL path segment or query value."""
    return quote(str(value), safe='')


def as_json(raw: bytes | None) -> tuple[bool, str]:
    """(shown, text): the value pretty-printed when the bytes are JSON, else why it is not shown."""
    if not raw:
        return True, ''
    try:
        return True, json.dumps(json.loads(raw.decode('utf-8')), indent=2, sort_keys=True, ensure_ascii=False)
    except (UnicodeDecodeError, ValueError):
        return False, NOT_SHOWN


def unzip_text(raw: bytes) -> str:
    """zlib'd UTF-8 text (rq's ``exc_info``), at most :data:`TRACEBACK_LIMIT` characters; the raw
    text when it is not compressed, as rq falls back."""
    try:
        inflater = zlib.decompressobj()
        data = inflater.decompress(raw, TRACEBACK_LIMIT)
        truncated = bool(inflater.unconsumed_tail)
    except zlib.error:
        data, truncated = raw[:TRACEBACK_LIMIT], len(raw) > TRACEBACK_LIMIT
    text = data.decode('utf-8', errors='replace')
    return text + ('\n… (cut)' if truncated else '')


def _number(text: str) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None


@dataclass
class ResultView:
    entry_id: str
    type: str
    created_at: float | None
    worker_name: str
    execution_id: str
    started_at: float | None
    ended_at: float | None
    value_shown: bool
    value: str
    traceback: str


def result_view(entry_id: str, data: dict[str, bytes]) -> ResultView:
    """One entry of rq's result stream: its ``return_value`` (base64 of the serializer's bytes)
    only when it is JSON, its ``exc_string`` (base64 of zlib'd text) in full."""

    def text(name: str) -> str:
        value = data.get(name)
        return value.decode('utf-8', errors='replace') if value else ''

    def b64(name: str) -> bytes | None:
        value = data.get(name)
        if not value:
            return None
        try:
            return base64.b64decode(value)
        except (binascii.Error, ValueError):
            return None

    shown, value = as_json(b64('return_value'))
    raw_exc = b64('exc_string')
    millis = entry_id.partition('-')[0]
    return ResultView(
        entry_id=entry_id,
        type=_RESULT_TYPES.get(text('type'), text('type') or '?'),
        created_at=int(millis) / 1000 if millis.isdigit() else None,
        worker_name=text('worker_name'),
        execution_id=text('execution_id'),
        started_at=_number(text('execution_started_at')),
        ended_at=_number(text('execution_ended_at')),
        value_shown=shown,
        value=value,
        traceback=unzip_text(raw_exc) if raw_exc else '',
    )


# Job hash fields shown in their own places on the job page (the rest go to "other fields").
_PLACED = {
    'data', 'meta', 'result', 'exc_info', 'description', 'status', 'origin', 'created_at', 'enqueued_at',
    'started_at', 'ended_at', 'last_heartbeat', 'worker_name', 'group_id', 'dependency_ids', 'dependency_id',
}  # fmt: skip
_BINARY = {'data', 'meta', 'result', 'exc_info'}


def other_fields(page: browse.JobPage) -> list[tuple[str, str]]:
    return sorted((k, page.field(k) or '') for k in page.hash if k not in _PLACED and k not in _BINARY)


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(HERE / 'templates')),
        autoescape=True,  # every value is escaped: job data is anyone's
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        when=when,
        duration=duration,
        q=quoted,
        function_of=function_of,
        score_time=score_time,
    )
    env.globals.update(ago=ago, kinds=browse.KINDS)
    return env
