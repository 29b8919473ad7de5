"""``benchmarks/bench.py --quick`` runs end to end (its own redis-server, both workers, both kinds)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_quick(script: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, str(ROOT / 'benchmarks' / script), '--quick'],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def test_bench_quick() -> None:
    done = run_quick('bench.py')
    rows = [line.split() for line in done.stdout.splitlines()]
    assert 'rq SimpleWorker' in done.stdout
    assert 'aiorq worker' in done.stdout
    for kind in ('plain', 'async'):
        assert [r[1] for r in rows if r and r[0] == kind] == ['rq', 'aiorq'], done.stdout
        assert all(r[-4] == '200' for r in rows if r and r[0] == kind), done.stdout
        assert f'{kind}: aiorq/rq throughput ratio' in done.stdout


def test_scheduler_lag_quick() -> None:
    done = run_quick('scheduler_lag.py')
    rows = {line.split()[0]: line.split()[1:] for line in done.stdout.splitlines()[1:3]}
    assert set(rows) == {'rq', 'aiorq'}, done.stdout
    assert all(r[0] == '6' for r in rows.values()), done.stdout
    assert 'p50 lag rq/aiorq' in done.stdout
