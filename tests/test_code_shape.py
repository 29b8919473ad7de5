"""The worker's shape, kept: no function over 60 lines, no import cycle, and no part of the
worker importing ``worker.py`` (which wires the parts) in ``aiorq_worker/`` and ``aiorq/protocol/``.

Read with ``ast`` from the source files: a function counts from its ``def`` to its last line
(docstring included); imports count wherever they are (in a function, under ``TYPE_CHECKING``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ('aiorq_worker', 'aiorq/protocol')
MAX_LINES = 60
# Functions allowed past MAX_LINES, by 'path::qualified name', each with its reason.
LONG_FUNCTIONS: dict[str, str] = {}
# What may import aiorq_worker.worker: the package's face and the commands that build workers.
WIRING_USERS = {
    'aiorq_worker',
    'aiorq_worker.cli',
    'aiorq_worker.clitools',
    'aiorq_worker.pool',
}


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).glob('*.py')):
            name = '.'.join(path.relative_to(ROOT).with_suffix('').parts)
            found[name.removesuffix('.__init__')] = path
    return found


def is_package(path: Path) -> bool:
    return path.name == '__init__.py'


def imported(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The modules of ``known`` that the module ``name`` imports, anywhere in it."""
    package = name if is_package(path) else name.rpartition('.')[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit('.', node.level - 1)[0] if node.level > 1 else package
                source = f'{base}.{node.module}' if node.module else base
            else:
                source = node.module or ''
            for alias in node.names:
                # ``from pkg import mod`` imports the submodule; ``from pkg import name``, pkg itself.
                submodule = f'{source}.{alias.name}'
                found.add(submodule if submodule in known else source)
    return {m for m in found if m in known and m != name}


def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imported(name, path, known) for name, path in known.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), and self-imports."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def long_functions() -> dict[str, int]:
    found = {}
    for path in modules().values():
        tree = ast.parse(path.read_text(), str(path))
        for qualname, node in functions(tree.body, ''):
            lines = (node.end_lineno or node.lineno) - node.lineno + 1
            if lines > MAX_LINES:
                found[f'{path.relative_to(ROOT).as_posix()}::{qualname}'] = lines
    return found


def functions(body: list[ast.stmt], prefix: str) -> list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    """Every function and method, nested ones included, by qualified name."""
    found: list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]] = []
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            found.append((prefix + node.name, node))
            found += functions(node.body, f'{prefix}{node.name}.')
        elif isinstance(node, ast.ClassDef):
            found += functions(node.body, f'{prefix}{node.name}.')
        else:
            for child in ast.iter_child_nodes(node):  # functions under if/try/with
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    found += functions([child], prefix)
    return found


def test_no_function_over_60_lines() -> None:
    found = long_functions()
    unexplained = {name: lines for name, lines in found.items() if name not in LONG_FUNCTIONS}
    assert not unexplained, f'functions over {MAX_LINES} lines: {unexplained}'


def test_every_exemption_is_still_needed() -> None:
    stale = set(LONG_FUNCTIONS) - set(long_functions())
    assert not stale, f'exempted but no longer over {MAX_LINES} lines (drop them): {sorted(stale)}'


def test_no_import_cycle() -> None:
    assert cycles(import_graph()) == []


def test_no_part_imports_the_wiring() -> None:
    importers = {name for name, deps in import_graph().items() if 'aiorq_worker.worker' in deps}
    assert importers <= WIRING_USERS, f'parts importing worker.py: {sorted(importers - WIRING_USERS)}'


def test_the_protocol_layer_never_imports_the_worker() -> None:
    graph = import_graph()
    wrong = {name: sorted(d for d in deps if d.startswith('aiorq_worker')) for name, deps in graph.items()}
    assert not {name: deps for name, deps in wrong.items() if name.startswith('aiorq.protocol') and deps}


@pytest.mark.parametrize(
    ('source', 'expected'),
    [
        ('def f():\n    from . import b\n', {'pkg.b'}),  # function-level
        ('from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import x\n', {'pkg.b'}),
        ('import pkg.b\n', {'pkg.b'}),
        ('from pkg import thing\n', {'pkg'}),  # a name from the package's __init__
    ],
)
def test_the_checker_sees_every_kind_of_import(tmp_path: Path, source: str, expected: set[str]) -> None:
    (tmp_path / 'a.py').write_text(source)
    known = {'pkg': tmp_path / '__init__.py', 'pkg.a': tmp_path / 'a.py', 'pkg.b': tmp_path / 'b.py'}
    assert imported('pkg.a', tmp_path / 'a.py', known) == expected


def test_the_checker_finds_a_cycle_and_a_long_function() -> None:
    assert cycles({'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': {'a'}}) == [['a', 'b', 'c']]
    body = 'class C:\n    def m(self):\n' + '        x = 1\n' * 70
    (qualname, node), *_ = functions(ast.parse(body).body, '')
    assert qualname == 'C.m' and (node.end_lineno or 0) - node.lineno + 1 == 71


def impure_builders() -> list[str]:
    """Protocol builders (``buffer_*``) that could send a command: a coroutine, or a parameter
    named like a connection."""
    found = []
    for name, path in modules().items():
        if not name.startswith('aiorq.protocol'):
            continue
        for qualname, node in functions(ast.parse(path.read_text(), str(path)).body, ''):
            if not node.name.startswith('buffer_'):
                continue
            params = {a.arg for a in node.args.args + node.args.kwonlyargs}
            if isinstance(node, ast.AsyncFunctionDef) or params & {'conn', 'connection', 'client', 'redis'}:
                found.append(f'{path.relative_to(ROOT).as_posix()}::{qualname}')
    return found


def test_builders_stay_values() -> None:
    """A builder returns what to write and reads nothing: what it needs from Redis is read
    before it runs (``jobs.read_deletion``, ``outcomes.read_cleanup``), so buffering never
    sends a command."""
    assert impure_builders() == []
