"""aiorq's date parsing of job hashes gives exactly what rq's ``str_to_date`` gives."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pytest
from rq.utils import str_to_date, utcformat

from aiorq.protocol import codec


def test_rq_format_parses_as_rq_parses_it() -> None:
    rnd = random.Random(7)
    start = datetime(1970, 1, 1, tzinfo=timezone.utc)
    for _ in range(2000):
        when = start + timedelta(seconds=rnd.uniform(0, 4e9), microseconds=rnd.randrange(1_000_000))
        text = utcformat(when)
        for value in (text, text.encode()):
            parsed = codec.parse_date(value)
            assert parsed == str_to_date(value) and parsed.tzinfo == timezone.utc, text


@pytest.mark.parametrize(
    'value',
    [
        '2026-11-29T01:02:03Z',  # rq's older format
        '2026-11-29T01:02:03.5Z',  # fewer digits: strptime's %f takes them
        b'2026-11-29T01:02:03.000001Z',
        '2026-02-30T01:02:03.000001Z',  # no such day: rq's error
        '2026-11-29 01:02:03.000001Z',
        '2026-11-29T01:02:03.00000aZ',
        'garbage',
    ],
)
def test_other_values_behave_as_in_rq(value: str | bytes) -> None:
    try:
        expected: object = str_to_date(value)
    except Exception as e:  # noqa: BLE001 - the same error type is expected
        with pytest.raises(type(e)):
            codec.parse_date(value)
    else:
        assert codec.parse_date(value) == expected


def test_restored_job_equals_rq_restore() -> None:
    from rq.job import Job

    made = Job.create('os.path.join', args=('a', 'b'), connection=codec.NOIO, description='d')
    raw = {k.encode(): v if isinstance(v, bytes) else str(v).encode() for k, v in made.to_dict().items()}
    raw |= {
        b'created_at': b'2026-11-29T01:02:03.123456Z',
        b'enqueued_at': b'2026-11-29T01:02:04.000001Z',
        b'started_at': b'2026-11-29T01:02:05Z',
        b'last_heartbeat': b'2026-11-29T01:02:06.999999Z',
        b'status': b'started',
        b'origin': b'q',
    }
    ours = codec.restore_job('j', raw)
    theirs = Job('j', connection=codec.NOIO)
    theirs.restore(raw)
    for name in ('created_at', 'enqueued_at', 'started_at', 'ended_at', 'last_heartbeat', 'origin', 'description'):
        assert getattr(ours, name) == getattr(theirs, name), name
    assert ours.get_status(refresh=False) == theirs.get_status(refresh=False)
