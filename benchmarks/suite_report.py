"""The report of ``benchmarks/suite.py``: medians over the rounds, one table per case (and worker
loop), the ratios within the run (per round, then the median) and issue 15's targets."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterator
from typing import Any

from suite_core import PEERS, Measurement, Sizes

Summary = dict[str, Any]
Column = tuple[str, int, Callable[[Summary], str]]
RowKey = tuple[str, str, str, str, 'int | None', 'int | None']

FIELDS = ['rate', 'seconds', 'wall', 'cpu_us_per_job', 'cpu_s', 'redis_cpu_us_per_job', 'cmds_per_job',
          'rss_mb', 'p50_ms', 'p90_ms', 'p99_ms', 'max_ms', 'ideal_fraction', 'missed']  # fmt: skip
WORKER_CASES = ('worker-async', 'worker-sync', 'startup', 'latency-back-to-back', 'latency-idle', 'io-bound',
                'scale', 'pool')  # fmt: skip
IDLE_P99_MS = 5.0


def median(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def fmt(v: float | None, spec: str = '.1f') -> str:
    return '-' if v is None else format(v, spec)


def row_key(m: Measurement) -> RowKey:
    conc = m.concurrency if m.case == 'io-bound' else None
    workers = m.workers if m.case in ('scale', 'pool') else None
    return (m.case, m.loop, m.system, m.variant, conc, workers)


def summarize(results: list[Measurement]) -> list[Summary]:
    """One summary per row (case, loop, system, variant[, concurrency/workers]): medians over the rounds."""
    groups: dict[RowKey, list[Measurement]] = {}
    for m in results:
        groups.setdefault(row_key(m), []).append(m)
    out = []
    for (case, loop, system, variant, conc, workers), ms in groups.items():
        ok = [m for m in ms if m.status == 'ok']
        failed = [m for m in ms if m.status == 'FAILED']
        s: Summary = {
            'type': 'summary', 'case': case, 'loop': loop, 'system': system, 'variant': variant,
            'version': ms[0].version, 'concurrency': conc if conc is not None else ms[0].concurrency,
            'workers': workers, 'n': max((m.n for m in ms), default=0),
            'rounds_ok': len(ok), 'rounds_failed': len(failed),
            'status': 'FAILED' if failed else (ms[0].status if not ok else 'ok'),
            'note': failed[0].note if failed else ms[0].note,
        }  # fmt: skip
        for f in FIELDS:
            s[f] = median([getattr(m, f) for m in ok])
        if case not in ('startup', 'latency-back-to-back', 'latency-idle'):
            s['rates_by_round'] = [m.rate for m in ok]
        out.append(s)
    return out


# ---------------------------------------------------------------------------------------------
# Tables


def status_cell(s: Summary) -> str:
    if s['status'] == 'FAILED':
        return f'FAILED {s["rounds_failed"]}/{s["rounds_ok"] + s["rounds_failed"]}'
    return str(s['status'])


def system_label(s: Summary) -> str:
    if s['system'] == 'rq' and s['case'] in WORKER_CASES:
        return 'rq SimpleWorker'
    return 'streaQ' if s['system'] == 'streaq' else str(s['system'])


def table(title: str, cols: list[Column], rows: list[Summary]) -> list[str]:
    """A fixed-width table; n/a and not-installed rows carry their reason instead of figures."""
    if not rows:  # a case left out with --only
        return []
    head = '  '.join(f'{name:<{w}}' if i == 0 else f'{name:>{w}}' for i, (name, w, _) in enumerate(cols))
    out = ['', f'== {title} ==', head, '-' * len(head)]
    notes = []
    for s in rows:
        if s['status'] in ('n/a', 'not installed'):
            label = '  '.join(f(s).ljust(w) for name, w, f in cols if name in ('system', 'waits with', 'workers'))
            out.append(f'{label}  {s["status"]}' + (f' ({s["note"]})' if s['note'] else ''))
            continue
        cells = [f(s) for _, _, f in cols]
        out.append('  '.join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, (_, w, _)) in enumerate(zip(cells, cols))))
        if s['status'] == 'FAILED':
            notes.append(f'  {s["system"]} {s["variant"]}: FAILED: {s["note"][:300]}')
    return out + notes


def common_cols() -> list[Column]:
    return [('system', 16, system_label), ('version', 8, lambda s: str(s['version'] or '-'))]


def client_tables(by_case: dict[tuple[str, str], list[Summary]], sizes: Sizes, cases: dict[str, str]) -> list[str]:
    out: list[str] = []
    for case in ('enqueue-seq', 'enqueue-100', 'enqueue-many'):
        out += table(f'{cases[case]}, N={sizes.jobs}', common_cols() + [
            ('jobs/s', 9, lambda s: fmt(s['rate'], '.0f')),
            ('client CPU us/job', 17, lambda s: fmt(s['cpu_us_per_job'])),
            ('redis CPU us/job', 16, lambda s: fmt(s['redis_cpu_us_per_job'])),
            ('cmds/job', 8, lambda s: fmt(s['cmds_per_job'], '.2f')),
            ('status', 10, status_cell),
        ], by_case.get((case, ''), []))  # fmt: skip
    return out


def worker_cols(startup: dict[str, Summary]) -> list[Column]:
    def net(s: Summary) -> str:
        st = startup.get(s['system'])
        if st is None or st['cpu_s'] is None or s['cpu_us_per_job'] is None or not s['n']:
            return '-'
        return fmt(s['cpu_us_per_job'] - st['cpu_s'] / s['n'] * 1e6)

    return common_cols() + [
        ('jobs/s', 8, lambda s: fmt(s['rate'], '.0f')),
        ('first->last s', 13, lambda s: fmt(s['seconds'], '.3f')),
        ('wall s', 7, lambda s: fmt(s['wall'], '.2f')),
        ('wrk CPU us/job', 14, lambda s: fmt(s['cpu_us_per_job'])),
        ('net us/job', 10, net),
        ('redis CPU us/job', 16, lambda s: fmt(s['redis_cpu_us_per_job'])),
        ('cmds/job', 8, lambda s: fmt(s['cmds_per_job'], '.2f')),
        ('RSS MB', 7, lambda s: fmt(s['rss_mb'])),
        ('status', 10, status_cell),
    ]


def latency_cols(idle: bool) -> list[Column]:
    cols: list[Column] = [
        ('system', 16, system_label),
        ('waits with', 18, lambda s: str(s['variant'] or '-')),
        ('p50 ms', 7, lambda s: fmt(s['p50_ms'], '.2f')),
        ('p90 ms', 7, lambda s: fmt(s['p90_ms'], '.2f')),
        ('p99 ms', 7, lambda s: fmt(s['p99_ms'], '.2f')),
        ('max ms', 7, lambda s: fmt(s['max_ms'], '.2f')),
    ]
    if idle:
        cols.append(('missed', 6, lambda s: fmt(s['missed'], '.0f')))
    else:
        cols.append(('jobs/s', 7, lambda s: fmt(s['rate'], '.0f')))
    return cols + [('status', 10, status_cell)]


def redis_bound(s: Summary) -> str:
    """The rate at which one Redis core would be saturated by this run's commands."""
    return fmt(1e6 / s['redis_cpu_us_per_job'] if s['redis_cpu_us_per_job'] else None, '.0f')


def of_ideal(s: Summary) -> str:
    return fmt(None if s['ideal_fraction'] is None else s['ideal_fraction'] * 100, '.1f') + '%'


def aiorq_scale_cols(label: Callable[[Summary], str]) -> list[Column]:
    return [
        ('workers', 22, label),
        ('jobs/s', 8, lambda s: fmt(s['rate'], '.0f')),
        ('first->last s', 13, lambda s: fmt(s['seconds'], '.3f')),
        ('wall s', 7, lambda s: fmt(s['wall'], '.2f')),
        ('wrk CPU us/job', 14, lambda s: fmt(s['cpu_us_per_job'])),
        ('redis CPU us/job', 16, lambda s: fmt(s['redis_cpu_us_per_job'])),
        ('cmds/job', 8, lambda s: fmt(s['cmds_per_job'], '.2f')),
        ('Redis-bound jobs/s', 18, redis_bound),
        ('status', 10, status_cell),
    ]  # fmt: skip


def pool_label(s: Summary) -> str:
    return 'aiorq worker' if s['variant'] == 'worker' else f'aiorq worker-pool -n {s["workers"]}'


def loop_tables(
    by_case: dict[tuple[str, str], list[Summary]], sizes: Sizes, cases: dict[str, str], loops: list[str]
) -> Iterator[str]:
    """Every worker case, one table per loop, the loops of a case next to each other."""
    for case in ('worker-async', 'worker-sync', 'startup', 'latency-back-to-back', 'latency-idle', 'io-bound',
                 'scale', 'pool'):  # fmt: skip
        for loop in loops:
            rows = by_case.get((case, loop), [])
            on = f', loop {loop}'
            startup = {s['system']: s for s in by_case.get(('startup', loop), [])}
            if case in ('worker-async', 'worker-sync'):
                yield from table(f'{cases[case]}, N={sizes.jobs}{on}', worker_cols(startup), rows)
            elif case == 'startup':
                yield from table(cases[case] + on, common_cols() + [
                    ('wall s', 7, lambda s: fmt(s['wall'], '.2f')),
                    ('CPU s', 6, lambda s: fmt(s['cpu_s'], '.3f')),
                    ('RSS MB', 7, lambda s: fmt(s['rss_mb'])),
                    ('status', 10, status_cell),
                ], rows)  # fmt: skip
            elif case.startswith('latency'):
                n = sizes.idle_jobs if case == 'latency-idle' else sizes.latency_jobs
                yield from table(f'{cases[case]}, N={n}{on}', latency_cols(case == 'latency-idle'), rows)
            elif case == 'io-bound':
                yield from table(f'{cases[case]}, N={sizes.io_jobs}{on}', [
                    ('system', 16, lambda s: f'aiorq c={s["concurrency"]}'),
                    ('ideal s', 7, lambda s: fmt(sizes.io_jobs * 0.1 / s['concurrency'], '.2f')),
                    ('first->last s', 13, lambda s: fmt(s['seconds'], '.3f')),
                    ('jobs/s', 8, lambda s: fmt(s['rate'], '.0f')),
                    ('of ideal', 8, of_ideal),
                    ('wrk CPU us/job', 14, lambda s: fmt(s['cpu_us_per_job'])),
                    ('redis CPU us/job', 16, lambda s: fmt(s['redis_cpu_us_per_job'])),
                    ('status', 10, status_cell),
                ], rows)  # fmt: skip
            else:
                label = (lambda s: f'aiorq x{s["workers"]}') if case == 'scale' else pool_label
                yield from table(f'{cases[case]}, N={sizes.jobs}{on}', aiorq_scale_cols(label), rows)


# ---------------------------------------------------------------------------------------------
# Ratios and targets


def per_round(results: list[Measurement], case: str, loop: str, attr: str = 'rate') -> dict[int, dict[str, float]]:
    """{round: {system[/variant]: value}} of the ok runs of ``case`` (rq's rows found on any loop)."""
    out: dict[int, dict[str, float]] = {}
    for m in results:
        value = getattr(m, attr)
        on_loop = m.loop == loop or (m.system == 'rq' and m.loop == 'asyncio')  # rq's worker has no loop
        if m.case != case or m.status != 'ok' or value is None or not on_loop:
            continue
        out.setdefault(m.round, {})[m.system + (f'/{m.variant}' if m.variant else '')] = value
    return out


def ratio_rounds(rounds: dict[int, dict[str, float]], num: str, dens: tuple[str, ...]) -> tuple[list[float], list[str]]:
    """num / the highest of dens in each round that has num and any of dens; the denominators' names."""
    ratios, fastest = [], []
    for _, row in sorted(rounds.items()):
        best = max((d for d in dens if d in row), key=lambda d: row[d], default=None)
        if num in row and best is not None and row[best]:
            ratios.append(row[num] / row[best])
            fastest.append(best)
    return ratios, fastest


def ratio_text(ratios: list[float], fastest: list[str]) -> str:
    if not ratios:
        return '-'
    per = ', '.join(f'{r:.2f}' for r in ratios)
    names = ', '.join(sorted(set(fastest)))
    return f'{statistics.median(ratios):.2f}x (rounds: {per}; against {names})'


def ratio_lines(results: list[Measurement], loops: list[str]) -> list[str]:
    out = ['', '== Ratios within this run (per round, then the median) ==']
    for loop in loops:
        for case, label, dens in (('worker-async', 'async def', PEERS), ('worker-sync', 'plain', ('saq', 'streaq'))):
            rounds = per_round(results, case, loop)
            for peers, what in ((dens, 'the fastest peer'), (('rq',), 'rq SimpleWorker')):
                ratios, fastest = ratio_rounds(rounds, 'aiorq', peers)
                if ratios:
                    out.append(f'[{loop}] {label}: aiorq / {what}: {ratio_text(ratios, fastest)}')
        ratios, fastest = ratio_rounds(per_round(results, 'pool', loop), 'aiorq/worker-pool', ('aiorq/worker',))
        if ratios:
            out.append(f'[{loop}] aiorq worker-pool -n 2 / aiorq worker: {ratio_text(ratios, fastest)}')
    for case, other in (('enqueue-seq', 'saq'), ('enqueue-seq', 'rq'), ('enqueue-many', 'rq')):
        ratios, fastest = ratio_rounds(per_round(results, case, ''), 'aiorq', (other,))
        if ratios:
            out.append(f'{case}: aiorq / {other}: {ratio_text(ratios, fastest)}')
    return out


def verdict(ok: bool | None) -> str:
    return 'n/a' if ok is None else 'met' if ok else 'NOT MET'


def at_least(value: float | None, limit: float) -> str:
    return verdict(None if value is None else value >= limit)


def at_most(value: float | None, limit: float) -> str:
    return verdict(None if value is None else value <= limit)


def median_ratio(
    results: list[Measurement], case: str, loop: str, num: str, dens: tuple[str, ...]
) -> tuple[float | None, str]:
    ratios, fastest = ratio_rounds(per_round(results, case, loop), num, dens)
    return (statistics.median(ratios) if ratios else None), ratio_text(ratios, fastest)


def find(
    summaries: list[Summary], case: str, loop: str, system: str, variant: str = '', **extra: Any
) -> Summary | None:
    for s in summaries:  # rounds that failed are left out of the medians: the others still count
        if (s['case'], s['loop'], s['system'], s['variant']) == (case, loop, system, variant) and s['rounds_ok']:
            if all(s.get(k) == v for k, v in extra.items()):
                return s
    return None


def net_cpu(summaries: list[Summary], case: str, loop: str) -> float | None:
    s, st = find(summaries, case, loop, 'aiorq'), find(summaries, 'startup', loop, 'aiorq')
    if s is None or s['cpu_us_per_job'] is None:
        return None
    return s['cpu_us_per_job'] - (st['cpu_s'] / s['n'] * 1e6 if st and st['cpu_s'] is not None else 0)


def throughput_targets(
    results: list[Measurement], summaries: list[Summary], loop: str
) -> Iterator[tuple[str, str, str]]:
    r, text = median_ratio(results, 'worker-async', loop, 'aiorq', PEERS)
    yield f'[{loop}] async def c=100 >= 2x the fastest of arq/saq/streaQ', text, at_least(r, 2)
    r, text = median_ratio(results, 'worker-sync', loop, 'aiorq', ('saq',))
    yield f'[{loop}] plain >= 2x saq', text, at_least(r, 2)
    r, text = median_ratio(results, 'worker-sync', loop, 'aiorq', ('streaq',))
    yield f'[{loop}] plain vs streaQ (for reference)', text, '-'
    for case, limit in (('worker-async', 150), ('worker-sync', 200)):
        cpu = net_cpu(summaries, case, loop)
        yield f'[{loop}] worker CPU <= {limit} us/job ({case}, net of start-up)', fmt(cpu), at_most(cpu, limit)
    for case in ('worker-async', 'worker-sync'):
        s = find(summaries, case, loop, 'aiorq')
        red = None if s is None else s['redis_cpu_us_per_job']
        cmds = '' if s is None else f' ({fmt(s["cmds_per_job"], ".2f")} commands)'
        yield f'[{loop}] Redis CPU <= 100 us/job ({case})', fmt(red) + cmds, at_most(red, 100)
    io = find(summaries, 'io-bound', loop, 'aiorq', concurrency=100)
    frac = None if io is None or io['ideal_fraction'] is None else io['ideal_fraction'] * 100
    yield f'[{loop}] I/O-bound c=100 >= 90% of ideal', fmt(frac) + '%', at_least(frac, 90)


def latency_target(summaries: list[Summary], loop: str) -> tuple[str, str, str]:
    ours = [s for s in (find(summaries, 'latency-idle', loop, 'aiorq', v) for v in ('latest_result', 'wait')) if s]
    saqs = [s for s in (find(summaries, 'latency-idle', loop, 'saq', v) for v in ('refresh pub/sub', 'poll 1 ms')) if s]
    name = f'[{loop}] idle latency p50 <= saq, p99 <= {IDLE_P99_MS:g} ms'
    if not ours:
        return name, '-', 'n/a'
    best = min(ours, key=lambda s: s['p50_ms'])
    saq = min(saqs, key=lambda s: s['p50_ms']) if saqs else None
    text = ', '.join(f'aiorq {s["variant"]} p50 {s["p50_ms"]:.2f} / p99 {s["p99_ms"]:.2f} ms' for s in ours)
    if saq is not None:
        text += f'; saq {saq["variant"]} p50 {saq["p50_ms"]:.2f} / p99 {saq["p99_ms"]:.2f} ms'
    ok = best['p99_ms'] <= IDLE_P99_MS and (saq is None or best['p50_ms'] <= saq['p50_ms'])
    return name, text, verdict(ok) + ('' if saq else ' (p99 only: saq not measured)')


def targets(results: list[Measurement], summaries: list[Summary], loops: list[str]) -> list[str]:
    """Issue 15's targets, each measured in this run."""
    rows: list[tuple[str, str, str]] = []
    for loop in loops:
        rows += list(throughput_targets(results, summaries, loop))
        rows.append(latency_target(summaries, loop))
        r, text = median_ratio(results, 'pool', loop, 'aiorq/worker-pool', ('aiorq/worker',))
        rows.append((f'[{loop}] aiorq worker-pool -n 2 >= 1.8x one process', text, at_least(r, 1.8)))
    r, text = median_ratio(results, 'enqueue-seq', '', 'aiorq', ('saq',))
    rows.append(('enqueue one call at a time >= saq', text, at_least(r, 1)))
    r, text = median_ratio(results, 'enqueue-many', '', 'aiorq', ('rq',))
    rows.append(('enqueue_many >= 2x rq', text, at_least(r, 2)))
    width = max(len(name) for name, _, _ in rows)
    out = ['', '== Targets of issue 15, measured in this run ==']
    out += [f'{name:<{width}}  {state:<8}  {text}' for name, text, state in rows]
    return out


def render(
    summaries: list[Summary], results: list[Measurement], sizes: Sizes, head: dict[str, Any], cases: dict[str, str]
) -> str:
    v = head['versions']
    out = [
        f'CPUs {head["cpu_count"]}, load {head["loadavg"]}, Python {head["python"]}, '
        f'redis-server {v["redis-server"]}, aiorq {v["aiorq"]}, rq {v["rq"]}, arq {v["arq"]}, saq {v["saq"]}, '
        f'streaQ {v["streaq"]}, uvloop {v["uvloop"]}, redis-py {v["redis-py"]}, hiredis {v["hiredis"]}',
        f'{sizes.rounds} round(s), median shown; {head["event_loop"]}',
    ]
    by_case: dict[tuple[str, str], list[Summary]] = {}
    for s in summaries:
        by_case.setdefault((s['case'], s['loop']), []).append(s)
    out += client_tables(by_case, sizes, cases)
    out += list(loop_tables(by_case, sizes, cases, head['loops']))
    out += ratio_lines(results, head['loops'])
    out += targets(results, summaries, head['loops'])
    verified = sum(m.verified for m in results)
    runs = sum(1 for m in results if m.verified)
    failed = [m for m in results if m.status == 'FAILED']
    out.append('')
    out.append(f'verified: {runs} runs, {verified} jobs checked (every result == its argument, nothing left queued)')
    if failed:
        which = (f'{m.case}/{m.system}{"/" + m.variant if m.variant else ""}[{m.loop}] round {m.round}' for m in failed)
        out.append(f'FAILED runs: {len(failed)} ({", ".join(which)})')
    return '\n'.join(out)
