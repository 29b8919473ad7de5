"""rq 3.0's public API, walked with ``inspect``: every name has an aiorq twin with rq's parameter
names, or a row (with its reason) in the table of docs/differences.md.

The table is the test's input: when rq adds a name or a parameter the test names it, and a row
for something aiorq does mirror fails too, so the documentation states exactly what holds.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import redis
import rq
import rq.command
import rq.executions
import rq.group
import rq.job
import rq.registry
import rq.results
import rq.suspension
from redis.asyncio import Redis

import aiorq
import aiorq.registry

DOC = Path(__file__).resolve().parents[2] / 'docs' / 'differences.md'
TABLE_HEADING = '## rq names aiorq does not mirror'
# rq's ``pipeline`` arguments may be absent: aiorq's transactions are its own (see the table's intro).
OPTIONAL_PARAMS = {'pipeline'}

# Clients that never connect: building objects does no I/O in either library.
_SYNC = redis.Redis(port=1)
_ASYNC = Redis(port=1)

REGISTRIES = [
    'StartedJobRegistry',
    'FinishedJobRegistry',
    'FailedJobRegistry',
    'DeferredJobRegistry',
    'ReadyJobRegistry',
    'ScheduledJobRegistry',
    'CanceledJobRegistry',
]


def _classes() -> list[tuple[str, type, type, Callable[[], object], Callable[[], object]]]:
    """(label, rq class, aiorq class, rq instance, aiorq instance)."""
    pairs: list[tuple[str, type, type, Callable[[], object], Callable[[], object]]] = [
        ('Queue', rq.Queue, aiorq.Queue, lambda: rq.Queue('q', connection=_SYNC), lambda: aiorq.Queue('q', _ASYNC)),
        ('Job', rq.job.Job, aiorq.Job, lambda: rq.job.Job(connection=_SYNC), lambda: aiorq.Job(connection=_ASYNC)),
        ('Group', rq.group.Group, aiorq.Group, lambda: rq.group.Group(_SYNC, 'g'), lambda: aiorq.Group(_ASYNC, 'g')),
        (
            'Result',
            rq.results.Result,
            aiorq.Result,
            lambda: rq.results.Result('j', rq.results.Result.Type.SUCCESSFUL, connection=_SYNC),
            lambda: aiorq.Result('j', aiorq.Result.Type.SUCCESSFUL, connection=_ASYNC),
        ),
        (
            'Worker',
            rq.Worker,
            aiorq.Worker,
            lambda: rq.Worker([], name='w', connection=_SYNC, prepare_for_work=False),
            lambda: aiorq.Worker(name='w', connection=_ASYNC),
        ),
        (
            'ExecutionRegistry',
            rq.executions.ExecutionRegistry,
            aiorq.ExecutionRegistry,
            lambda: rq.executions.ExecutionRegistry('j', connection=_SYNC),
            lambda: aiorq.ExecutionRegistry('j', connection=_ASYNC),
        ),
    ]
    for name in REGISTRIES:
        rq_cls, ai_cls = getattr(rq.registry, name), getattr(aiorq, name)
        pairs.append(
            (
                name,
                rq_cls,
                ai_cls,
                lambda c=rq_cls: c('q', connection=_SYNC),  # type: ignore[misc]
                lambda c=ai_cls: c('q', connection=_ASYNC),  # type: ignore[misc]
            )
        )
    return pairs


def _functions() -> list[tuple[str, Callable[..., Any]]]:
    """rq's module-level functions a user calls: (dotted name, function)."""
    found = [(f'rq.{n}', getattr(rq, n)) for n in ('get_current_job', 'cancel_job', 'requeue_job')]
    for module in (rq.command, rq.suspension):
        for name, value in vars(module).items():
            if inspect.isfunction(value) and value.__module__ == module.__name__ and not name.startswith('_'):
                found.append((f'{module.__name__}.{name}', value))
    return found


# -- the table -----------------------------------------------------------------------------

ENTRY = re.compile(r'^(?P<name>[A-Za-z_][\w.]*)(?:\((?P<params>[\w, ]+)\))?$')


def read_table() -> tuple[dict[str, str], dict[tuple[str, str], str]]:
    """Names (``Queue.dequeue_any``) and parameters (``Queue.all`` + ``death_penalty_class``)
    listed in the first column of the table, each with its reason."""
    text = DOC.read_text()
    assert TABLE_HEADING in text, f'{DOC} has no "{TABLE_HEADING}" section'
    section = text.split(TABLE_HEADING, 1)[1]
    rows = []
    for line in section.splitlines():
        if line.startswith('## '):
            break
        if line.startswith('|'):
            rows.append([c.strip() for c in line.strip().strip('|').split('|')])
    assert len(rows) > 2, 'the table has no rows'
    names: dict[str, str] = {}
    params: dict[tuple[str, str], str] = {}
    for cells in rows[2:]:  # header and separator first
        assert len(cells) == 2 and cells[1], f'a row needs an rq name and a reason: {cells}'
        spans = re.findall(r'`([^`]+)`', cells[0])
        assert spans, f'no `rq name` in {cells[0]!r}'
        for span in spans:
            m = ENTRY.match(span)
            assert m, f'cannot read table entry `{span}` (write `Class.name` or `Class.method(param, ...)`)'
            if m['params']:
                for param in m['params'].split(','):
                    key = (m['name'], param.strip())
                    assert key not in params, f'`{span}` is listed twice'
                    params[key] = cells[1]
            else:
                assert m['name'] not in names, f'`{span}` is listed twice'
                names[m['name']] = cells[1]
    return names, params


# -- walking rq ----------------------------------------------------------------------------


def public_names(cls: type, instance: object) -> set[str]:
    """Class members (methods, class/static methods, properties, attributes) and the attributes
    ``__init__`` sets, without the ones starting with ``_``."""
    return {n for n in set(dir(cls)) | set(vars(instance)) if not n.startswith('_')}


def param_names(func: Callable[..., Any]) -> list[str]:
    sig = inspect.signature(func)
    return [
        p.name
        for p in sig.parameters.values()
        if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name not in ('self', 'cls')
    ]


def _callable_member(cls: type, name: str) -> Callable[..., Any] | None:
    raw = inspect.getattr_static(cls, name, None)  # instance attributes are not callables
    if isinstance(raw, (classmethod, staticmethod)):
        return raw.__func__
    if inspect.isfunction(raw):
        return raw
    return None


def _compare_params(
    label: str, rq_func: Callable[..., Any], ai_func: Callable[..., Any], params: dict[tuple[str, str], str]
) -> Iterator[str]:
    ours = set(param_names(ai_func))
    for param in param_names(rq_func):
        listed = (label, param) in params
        if param in ours and listed:
            yield f'{label}({param}): aiorq takes it, yet the table lists it (remove the row)'
        elif param not in ours and not listed and param not in OPTIONAL_PARAMS:
            yield f'{label}({param}): aiorq does not take this parameter of rq, and the table does not list it'


def walk() -> tuple[list[str], set[str], set[tuple[str, str]]]:
    """Problems, and the table entries that matched an rq name or parameter."""
    names, params = read_table()
    problems: list[str] = []
    seen_names: set[str] = set()
    seen_params: set[tuple[str, str]] = set()

    def check_params(label: str, rq_func: Callable[..., Any], ai_func: Callable[..., Any]) -> None:
        seen_params.update((label, p) for p in param_names(rq_func))
        problems.extend(_compare_params(label, rq_func, ai_func, params))

    for label, rq_cls, ai_cls, rq_new, ai_new in _classes():
        ours = public_names(ai_cls, ai_new())
        check_params(f'{label}.__init__', rq_cls.__init__, ai_cls.__init__)  # type: ignore[misc]
        for name in sorted(public_names(rq_cls, rq_new())):
            full = f'{label}.{name}'
            seen_names.add(full)
            if name not in ours:
                if full not in names:
                    problems.append(f'{full}: rq has it, aiorq has no twin and the table does not list it')
                continue
            if full in names:
                problems.append(f'{full}: aiorq mirrors it, yet the table lists it (remove the row)')
            rq_func, ai_func = _callable_member(rq_cls, name), _callable_member(ai_cls, name)
            if rq_func is not None and ai_func is not None:
                check_params(full, rq_func, ai_func)

    for full, rq_func in _functions():
        seen_names.add(full)
        ai_func = getattr(aiorq, full.rsplit('.', 1)[1], None)
        if ai_func is None:
            if full not in names:
                problems.append(f'{full}: rq has it, aiorq has no twin and the table does not list it')
            continue
        if full in names:
            problems.append(f'{full}: aiorq mirrors it, yet the table lists it (remove the row)')
        check_params(full, rq_func, ai_func)

    for name in sorted(set(names) - seen_names):
        problems.append(f'{name}: listed in the table, but rq 3.0 has no such public name')
    for label, param in sorted(set(params) - seen_params):
        problems.append(f'{label}({param}): listed in the table, but rq has no such parameter there')
    return problems, seen_names, seen_params


def test_every_rq_name_is_mirrored_or_listed() -> None:
    problems, _, _ = walk()
    assert not problems, f'rq 3.0 API vs aiorq ({DOC.name} table):\n' + '\n'.join(problems)


def test_the_walk_reaches_what_it_promises() -> None:
    """Guards the walk itself: the names the brief promises are among those compared."""
    _, seen_names, seen_params = walk()
    for name in (
        'Queue.enqueue',
        'Job.exc_info',
        'Job.execution_registry',
        'StartedJobRegistry.requeue',
        'Worker.find_by_key',
        'Worker.get_current_executions',
        'Worker.successful_job_count',
        'Worker.hostname',
        'Job.origin',
        'rq.command.send_stop_job_command',
        'rq.suspension.is_suspended',
        'rq.get_current_job',
    ):
        assert name in seen_names, name
    assert ('rq.command.send_stop_job_command', 'serializer') in seen_params
    assert ('FinishedJobRegistry.cleanup', 'exception_handlers') in seen_params


def test_a_missing_name_and_a_stale_row_are_reported() -> None:
    """The comparison fails both ways, on a synthetic pair of functions."""

    def theirs(connection: Any, job_id: str, serializer: Any = None, pipeline: Any = None) -> None: ...

    def ours(connection: Any, job_id: str) -> None: ...

    missing = list(_compare_params('f', theirs, ours, {}))
    assert missing == ['f(serializer): aiorq does not take this parameter of rq, and the table does not list it']
    assert list(_compare_params('f', theirs, ours, {('f', 'serializer'): 'why'})) == []
    stale = list(_compare_params('f', theirs, theirs, {('f', 'serializer'): 'why'}))
    assert stale == ['f(serializer): aiorq takes it, yet the table lists it (remove the row)']
