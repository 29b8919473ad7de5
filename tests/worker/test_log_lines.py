"""The worker's per-job log lines: rq's text, and the caller fields ``logging`` itself would give."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from aiorq_worker import events


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def captured() -> Iterator[list[logging.LogRecord]]:
    handler = Capture()
    logger = logging.getLogger('aiorq.worker')
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _line_of(func: Any, text: str) -> int:
    lines, first = inspect.getsourcelines(func)
    return first + next(i for i, line in enumerate(lines) if text in line)


def test_log_lines_keep_text_and_caller(captured: list[logging.LogRecord]) -> None:
    ex: Any = SimpleNamespace(queue='default', description='tasks.add(1, 2)', job_id='abc')
    listener = events.LogListener('w1')
    listener.job_started(ex)
    listener.job_ended(ex, events.Ending.OK)
    listener.job_ended(ex, events.Ending.FAILED)
    events.LogListener('w1', describe=False).job_started(ex)
    assert [(r.levelno, r.getMessage()) for r in captured] == [
        (logging.INFO, 'default: tasks.add(1, 2) (abc)'),
        (logging.INFO, 'default: Job OK (abc)'),
        (logging.WARNING, 'default: Job failed (abc)'),
        (logging.INFO, 'default: abc'),
    ]
    # What logging's findCaller reports for a call written in the listener: its file, line, function.
    started, ok, failed, bare = captured
    assert {r.pathname for r in captured} == {events.LogListener.job_started.__code__.co_filename}
    assert {r.module for r in captured} == {'events'}
    assert (started.funcName, ok.funcName) == ('job_started', 'job_ended')
    assert started.lineno == _line_of(events.LogListener.job_started, "'%s: %s (%s)'")
    assert bare.lineno == _line_of(events.LogListener.job_started, "'%s: %s',")
    assert ok.lineno == failed.lineno == _line_of(events.LogListener.job_ended, '_log(')


def test_log_lines_below_the_level_build_no_record(captured: list[logging.LogRecord]) -> None:
    logging.getLogger('aiorq.worker').setLevel(logging.WARNING)
    ex: Any = SimpleNamespace(queue='default', description='d', job_id='abc')
    events.LogListener('w1').job_started(ex)
    events.LogListener('w1').job_ended(ex, events.Ending.FAILED)
    assert [r.getMessage() for r in captured] == ['default: Job failed (abc)']


def test_spans_listener_keeps_nothing_without_a_tracer(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(events.tracing, 'tracer_configured', lambda: False)
    monkeypatch.setattr(events.tracing, 'execution_span', lambda *a: calls.append('span'))
    monkeypatch.setattr(events.tracing, 'set_outcome', lambda kind: calls.append(kind))
    ex: Any = SimpleNamespace(id='e1', queue='default', job_id='abc')
    listener = events.TracingListener()
    listener.job_started(ex)
    listener.job_ended(ex, events.Ending.OK)
    listener.job_left(ex)
    assert calls == [] and listener._spans == {}
