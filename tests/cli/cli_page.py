"""The shell sessions of docs/cli.md, for the tests that run them as written.

A console block there is preceded by ``<!-- shell: tests/cli/<file>.py::<test> -->`` (indented as
the block is, inside a list item); :func:`sessions` returns the commands of the blocks marked for
one test with the output shown under each, and :func:`run` runs one with
``observability/docs_page.py``'s :func:`shell`, so that a test checks what the page shows (and
fails when the page shows something else)."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

from observability import docs_page

PAGE = docs_page.ROOT / 'docs' / 'cli.md'
MARKED = re.compile(
    r'^(?P<indent>[ \t]*)<!--\s*shell:\s*tests/cli/(?P<file>\w+)\.py::(?P<test>\w+)\s*-->\n'
    r'(?P=indent)```console\n(?P<body>.*?)^(?P=indent)```',
    re.M | re.S,
)


def sessions(test: str) -> list[tuple[str, list[str]]]:
    """``(command, output lines)`` for each ``$ `` line of the console blocks marked for ``test``."""
    found: list[tuple[str, list[str]]] = []
    for m in MARKED.finditer(PAGE.read_text()):
        if m.group('test') != test:
            continue
        for line in textwrap.dedent(m.group('body')).splitlines():
            if line.startswith('$ '):
                assert not line.endswith('\\'), f'{test}: keep each command on one line'
                found.append((line[2:], []))
            else:
                assert found, f'{test}: a console block starts with output, not a $ command'
                found[-1][1].append(line)
    assert found, f'docs/cli.md has no console block marked for {test}'
    return [(command, '\n'.join(output).rstrip('\n').splitlines()) for command, output in found]


def run(command: str, directory: Path, **env: str) -> tuple[int, str, list[str]]:
    """Run ``command`` as documented; its exit status, stdout and stderr lines."""
    directory.mkdir(parents=True)
    with docs_page.shell(command, directory, **env) as sh:
        status = sh.proc.wait(60)
    return status, sh.out(), sh.stderr.read_text(errors='replace').rstrip('\n').splitlines()
