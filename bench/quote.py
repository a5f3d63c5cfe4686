"""Benchmark of tenantry.core.pricing: quotes per second, beside two baselines.

Run: ``.venv/bin/python bench/quote.py [--seconds PER_FIGURE]``

The plan has a base fee and three metrics, each priced on five graduated tiers
with flat fees and fractional unit prices (down to 10^-12 of a minor unit); the
usage is a pool of 1,000 random figures up to 10^15 per metric, the same for
every figure. Measured in-process, one core:

* ``quote()``: exact Decimal pricing, one rounding per line, the tier breakdown;
* ``quote()`` + ``quote_json()``: what ``tenantry quote --json`` computes;
* baseline "Fraction": the same plan priced with ``fractions.Fraction`` (the
  tests' kind of reference: exact, no breakdown kept), checked equal first;
* baseline "integer per_unit": each metric priced ``quantity × unit`` in plain
  integers, one price per metric: the floor of what any pricing costs.

No goal: the figures and ratios are printed for information; the script exits 0.
"""

from __future__ import annotations

import argparse
import math
import random
import time
from collections.abc import Callable
from fractions import Fraction

from tenantry.core.pricing import quote, quote_json
from tenantry.core.resources import PlanSpec

METRICS = ("api_calls", "messages", "storage_gb")
TIERS = [
    {"upTo": 1_000, "unitAmount": "0"},
    {"upTo": 100_000, "unitAmount": "0.5", "flatAmount": 1_000},
    {"upTo": 10_000_000, "unitAmount": "0.01", "flatAmount": 5_000},
    {"upTo": 1_000_000_000, "unitAmount": "0.000125"},
    {"unitAmount": "0.000000000001", "flatAmount": 25_000},
]
PLAN = PlanSpec.model_validate(
    {
        "displayName": "Bench",
        "price": {"amount": 9_900, "currency": "USD"},
        "metrics": [{"name": metric} for metric in METRICS],
        "meteredPrices": [
            {"metric": metric, "model": "graduated", "allowance": 100, "tiers": TIERS}
            for metric in METRICS
        ],
    }
)
POOL = 1_000


def rate(
    operation: Callable[[dict[str, int]], object], pool: list[dict[str, int]], seconds: float
) -> float:
    """Calls per second of ``operation`` over the pool, measured for about ``seconds``."""
    operation(pool[0])  # warm-up
    calls = 0
    started = time.perf_counter()
    while True:
        for usage in pool:
            operation(usage)
        calls += len(pool)
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            return calls / elapsed


def usage_pool() -> list[dict[str, int]]:
    generator = random.Random(42)
    # Spread over every tier: as many small figures as figures up to 10^15.
    figures = [lambda: generator.randint(0, 2_000_000), lambda: 10 ** generator.randint(3, 15)]
    return [{metric: generator.choice(figures)() for metric in METRICS} for _ in range(POOL)]


_FRACTION_TIERS = [
    (tier.up_to, Fraction(tier.unit_amount), tier.flat_amount)
    for tier in PLAN.metered_prices[0].tiers
]


def fraction_quote(usage: dict[str, int]) -> int:
    """The same plan priced with Fractions; the total in minor units."""
    total = PLAN.price.amount
    for price in PLAN.metered_prices:
        billable = max(0, usage.get(price.metric, 0) - price.allowance)
        amount, lower = Fraction(0), 0
        for up_to, unit, flat in _FRACTION_TIERS:
            if billable <= lower:
                break
            top = billable if up_to is None else min(billable, up_to)
            amount += (top - lower) * unit + flat
            lower = up_to or lower
        total += math.floor(amount + Fraction(1, 2))
    return total


_UNIT = 3  # minor units per unit


def integer_quote(usage: dict[str, int]) -> int:
    """The floor: one integer product per metric, no tiers, no exactness to keep."""
    return PLAN.price.amount + sum(usage.get(metric, 0) * _UNIT for metric in METRICS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seconds", type=float, default=2.0, help="time per figure (4 figures; default 2)"
    )
    seconds = parser.parse_args().seconds
    pool = usage_pool()
    for usage in pool:
        assert quote("bench", PLAN, usage).total == fraction_quote(usage), usage

    figures = {
        "quote()": rate(lambda usage: quote("bench", PLAN, usage), pool, seconds),
        "quote() + quote_json()": rate(
            lambda usage: quote_json(quote("bench", PLAN, usage)), pool, seconds
        ),
        "baseline: Fraction": rate(fraction_quote, pool, seconds),
        "baseline: integer per_unit": rate(integer_quote, pool, seconds),
    }
    print(f"tenantry.core.pricing benchmark ({seconds:g} s per figure)\n")
    print(f"{'':<28} {'quotes/s':>12} {'vs quote()':>11}")
    ours = figures["quote()"]
    for name, figure in figures.items():
        print(f"{name:<28} {figure:>12,.0f} {figure / ours:>10.2f}x")
    print()
    print(
        f"quote() runs at {ours / figures['baseline: Fraction']:.2f}x the Fraction reference "
        f"and {ours / figures['baseline: integer per_unit']:.3f}x plain integer per_unit "
        f"({1e6 / ours:.1f} µs a quote)."
    )


if __name__ == "__main__":
    main()
