"""The benchmark scripts run end to end with ``--quick`` (each with its own redis-server):
``bench.py`` (both workers, both kinds), ``scheduler_lag.py`` and ``suite.py`` (every case on both
worker loops; arq, saq and streaQ are absent from the main virtualenv, so the suite must report them
as not installed)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_quick(script: str, *extra: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, str(ROOT / 'benchmarks' / script), '--quick', *extra],
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


def parse_tables(text: str) -> dict[tuple[str, str], list[list[str]]]:
    """{(case number, worker loop or ''): rows split on whitespace} of the suite's report."""
    tables = {}
    for block in text.split('\n== ')[1:]:
        title, *lines = block.splitlines()
        loop = title.rsplit(', loop ', 1)[1].split()[0] if ', loop ' in title else ''
        tables[(title.split('.')[0], loop)] = [line.split() for line in lines[2:] if line.strip()]
    return tables


def test_suite_quick(tmp_path: Path) -> None:
    out = tmp_path / 'results.jsonl'
    done = run_quick('suite.py', '--json', str(out))
    text = done.stdout
    assert 'FAILED' not in text, text
    tables = parse_tables(text)
    loops = ['asyncio', 'uvloop'] if importlib.util.find_spec('uvloop') else ['asyncio']
    worker_tables = ('4+7', '5+7', '6', '7', '8', '9', '10', '11')
    assert set(tables) >= {(t, '') for t in '123'} | {(t, loop) for t in worker_tables for loop in loops}, text

    def row(table: str, loop: str, label: str) -> list[str]:
        rows = [r for r in tables[(table, loop)] if ' '.join(r).startswith(label + ' ')]
        assert len(rows) == 1, (table, loop, label, text)
        return rows[0]

    for table in ('1', '3'):
        for system in ('aiorq', 'rq'):
            assert row(table, '', system)[-1] == 'ok', text
    assert row('2', '', 'aiorq')[-1] == 'ok' and row('2', '', 'rq')[1] == 'n/a', text
    for system in ('arq', 'saq', 'streaq'):
        if importlib.util.find_spec(system) is None:
            label = 'streaQ' if system == 'streaq' else system
            assert row('1', '', label)[1:3] == ['not', 'installed'], text
            assert row('4+7', 'asyncio', label)[1:3] == ['not', 'installed'], text
    for loop in loops:
        for table in ('4+7', '5+7', '7'):
            assert row(table, loop, 'aiorq')[-1] == 'ok', text
        for table, variants in (('6', ['latest_result']), ('10', ['latest_result', 'wait'])):
            for variant in variants:
                assert row(table, loop, f'aiorq {variant}')[-1] == 'ok', text
            rq = row(table, loop, 'rq SimpleWorker latest_result')
            assert rq[-1] == 'ok' if loop == 'asyncio' else rq[3] == 'n/a', text
        assert [r[:2] for r in tables[('8', loop)]] == [['aiorq', 'c=100'], ['aiorq', 'c=500']], text
        assert [r[:2] for r in tables[('9', loop)]] == [['aiorq', 'x1'], ['aiorq', 'x2']], text
        assert row('11', loop, 'aiorq worker')[-1] == 'ok', text
        pool = row('11', loop, 'aiorq worker-pool -n 2')
        assert pool[-1] == 'ok' or pool[5] == 'n/a', text
        assert f'[{loop}] async def: aiorq / rq SimpleWorker' in text
        assert f'[{loop}] idle latency p50 <= saq, p99 <= 5 ms' in text
    assert '== Targets of issue 15, measured in this run ==' in text
    verified = [line for line in text.splitlines() if line.startswith('verified: ')]
    assert verified and int(verified[0].split()[3]) > 0, text

    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert records[0]['type'] == 'header' and records[0]['cpu_count'] >= 1 and records[0]['loops'] == loops
    worker = [r for r in records if r['type'] == 'measurement' and r['case'] == 'worker-async']
    by_system = {(r['system'], r['loop']): r for r in worker}
    for key in [('rq', 'asyncio')] + [('aiorq', loop) for loop in loops]:
        r = by_system[key]
        assert r['status'] == 'ok' and r['verified'] == r['n'] == 200, r
        assert r['rate'] > 0 and r['cpu_us_per_job'] > 0 and r['cmds_per_job'] > 0 and r['rss_mb'] > 0, r
    idle = [r for r in records if r['type'] == 'measurement' and r['case'] == 'latency-idle' and r['status'] == 'ok']
    assert idle and all(0 < r['p50_ms'] <= r['p90_ms'] <= r['p99_ms'] <= r['max_ms'] for r in idle), idle
