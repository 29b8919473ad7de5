"""Typed tasks as the type checkers see them: mypy and pyright (basedpyright or pyright) over
``uses.py``, whose positive cases are ``assert_type`` and whose negative cases carry ignore comments
that each checker must find needed (docs/typed-tasks.md)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

Checker = Callable[[Path, Path], 'subprocess.CompletedProcess[str]']
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
USES = HERE / 'uses.py'
BIN = Path(sys.executable).parent
# One negative case made valid: its ignore comments are then unneeded, which each checker must report.
NEGATIVE = "await resize.delay('a.png', '640')"
MADE_VALID = "await resize.delay('a.png', 640)"


def mypy(path: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    config = tmp_path / 'mypy.ini'
    # follow_imports=silent: only the uses are judged (aiorq's own types are the main run's).
    config.write_text(
        '[mypy]\npython_version = 3.10\nstrict = True\nwarn_unused_ignores = True\n'
        f'follow_imports = silent\nmypy_path = {ROOT}\n'
    )
    return subprocess.run(
        [sys.executable, '-m', 'mypy', '--config-file', str(config), '--cache-dir', str(tmp_path / 'cache'), str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )


def pyright(path: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    found = shutil.which('basedpyright', path=str(BIN)) or shutil.which('pyright', path=str(BIN))
    assert found, f'neither basedpyright nor pyright in {BIN}: install the dev extra (pip install -e .[dev])'
    config = tmp_path / 'pyrightconfig.json'
    settings = {
        'include': [str(path)],
        'extraPaths': [str(ROOT)],  # an editable install's import hook is invisible to pyright
        'pythonVersion': '3.10',
        'typeCheckingMode': 'standard',
        # Only `# pyright: ignore[...]` counts for pyright, so each checker's comment is tested apart.
        'enableTypeIgnoreComments': False,
        'reportUnnecessaryTypeIgnoreComment': 'error',
    }
    config.write_text(json.dumps(settings))
    return subprocess.run(
        [found, '--project', str(config), '--pythonpath', sys.executable],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )


@pytest.mark.parametrize('checker', [mypy, pyright])
def test_uses_check(checker: Checker, tmp_path: Path) -> None:
    run = checker(USES, tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.parametrize('checker', [mypy, pyright])
def test_a_negative_case_that_type_checks_fails(checker: Checker, tmp_path: Path) -> None:
    """The ignore comments are live: a negative case that stops being an error is reported."""
    source = USES.read_text()
    assert source.count(NEGATIVE) == 1
    mutated = tmp_path / 'uses.py'
    mutated.write_text(source.replace(NEGATIVE, MADE_VALID))
    run = checker(mutated, tmp_path)
    assert run.returncode != 0, run.stdout + run.stderr
    line = source[: source.index(NEGATIVE)].count('\n') + 1
    assert f'uses.py:{line}:' in run.stdout, run.stdout + run.stderr
    assert 'nused "type: ignore"' in run.stdout or 'Unnecessary "# pyright: ignore"' in run.stdout, run.stdout
