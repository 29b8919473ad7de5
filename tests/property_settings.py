"""Hypothesis settings of the property tests: derandomized (the same examples on every machine and
every run), no example database, no deadline (a loaded machine is slow, not wrong)."""

from __future__ import annotations

from hypothesis import HealthCheck, settings


def derandomized(max_examples: int, redis: bool = False) -> settings:
    """``redis``: examples that talk to the test's Redis (a function-scoped fixture, slow ones)."""
    checks = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow] if redis else []
    return settings(
        max_examples=max_examples, derandomize=True, database=None, deadline=None, suppress_health_check=checks
    )
