"""Pricing: what one full period of a Plan costs for the period's usage, exactly.

Each metered price turns its metric's quantity into one charge, with
`billable = max(0, quantity - allowance)` and, by its model:

- `per_unit`: `billable × unitAmount`;
- `package`: `ceil(billable / packageSize) × packageAmount`;
- `graduated`: tier i covers `(upTo[i-1], upTo[i]]` (from 0; the last is
  unbounded) and prices the units inside it at its `unitAmount`, plus its
  `flatAmount` once it holds any;
- `volume`: the one tier with `upTo[i-1] < billable ≤ upTo[i]` prices them all,
  `billable × unitAmount + flatAmount`; nothing billable costs nothing.

The amount is computed exactly (`Decimal` under `money.EXACT`, which raises
rather than drop a digit), then rounded once, half up, to integer minor units,
with the unrounded amount kept beside it. A total is the base fee plus the
rounded charges, never a rounded sum. Pure: plain data in, frozen results out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from tenantry.core.invoices import TierPart
from tenantry.core.money import EXACT, multiply, plain, round_minor, to_decimal
from tenantry.core.resources import ChargeModel, MeteredPrice, PlanSpec, Tier

_ZERO = Decimal(0)


@dataclass(frozen=True)
class MeteredCharge:
    """One metered price applied to its metric's quantity for a period."""

    metric: str
    model: ChargeModel
    quantity: Decimal
    allowance: int
    billable: Decimal  # quantity past the allowance
    unit_amount: Decimal | None  # `per_unit`: minor units per unit
    package_size: int | None  # `package`: units a package
    packages: int | None  # `package`: packages started
    unrounded: Decimal  # exact, in minor units
    amount: int  # rounded once, half up
    tiers: tuple[TierPart, ...]  # graduated: each tier holding units; volume: the one used


@dataclass(frozen=True)
class Quote:
    """One full paid period of a Plan: no trial, proration, discount or tax."""

    plan: str
    currency: str
    base_fee: int  # the plan's price for the period, minor units
    charges: tuple[MeteredCharge, ...]  # one per metered price, in the plan's order
    total: int  # base fee + the rounded charges


def price_metered(price: MeteredPrice, quantity: int | Decimal) -> MeteredCharge:
    """The charge for `quantity` units of `price.metric` in one period.

    A fractional quantity is priced like any other (a late-usage correction
    prices the difference of two figures); a tier's flat fee applies once the
    tier holds more than 0 units.
    """
    exact = Decimal(quantity)
    if not exact.is_finite() or exact < 0:
        raise ValueError(f"{price.metric}: the quantity must be a number ≥ 0, not {quantity}")
    billable = max(_ZERO, EXACT.subtract(exact, price.allowance))
    unit_amount: Decimal | None = None
    packages: int | None = None
    tiers: tuple[TierPart, ...] = ()
    match price.model:
        case ChargeModel.PER_UNIT:
            unit_amount = to_decimal(price.unit_amount)
            unrounded = multiply(billable, unit_amount)
        case ChargeModel.PACKAGE:
            if price.package_size is None or price.package_amount is None:
                raise ValueError(f"{price.metric}: the package model needs a size and an amount")
            packages = _packages(billable, price.package_size)
            unrounded = Decimal(packages * price.package_amount)
        case ChargeModel.GRADUATED:
            tiers = _graduated(price.tiers, billable)
            unrounded = _sum(part.amount for part in tiers)
        case ChargeModel.VOLUME:
            tiers = _volume(price.metric, price.tiers, billable)
            unrounded = _sum(part.amount for part in tiers)
    return MeteredCharge(
        metric=price.metric,
        model=price.model,
        quantity=exact,
        allowance=price.allowance,
        billable=billable,
        unit_amount=unit_amount,
        package_size=price.package_size if price.model == ChargeModel.PACKAGE else None,
        packages=packages,
        unrounded=unrounded,
        amount=round_minor(unrounded),
        tiers=tiers,
    )


def quote(plan_name: str, plan: PlanSpec, usage: Mapping[str, int | Decimal]) -> Quote:
    """The plan's base fee and one charge per metered price for `usage` (a priced
    metric missing from it counts 0; a metric the plan does not price is refused,
    since its usage would silently cost nothing)."""
    priced = [price.metric for price in plan.metered_prices]
    unknown = sorted(set(usage) - set(priced))
    if unknown:
        names = ", ".join(repr(metric) for metric in unknown)
        prices = f"it prices {', '.join(priced)}" if priced else "it prices no metric"
        raise ValueError(f"plan {plan_name!r} has no metered price for {names}: {prices}")
    charges = tuple(
        price_metered(price, usage.get(price.metric, 0)) for price in plan.metered_prices
    )
    base_fee = plan.price.amount
    return Quote(
        plan=plan_name,
        currency=plan.price.currency,
        base_fee=base_fee,
        charges=charges,
        total=base_fee + sum(charge.amount for charge in charges),
    )


def quote_json(q: Quote) -> dict[str, Any]:
    """The quote as JSON: exact figures as plain decimal strings, amounts as integers."""
    base: dict[str, Any] = {
        "metric": None,
        "quantity": "1",
        "billable": "1",
        "amount": q.base_fee,
        "unrounded": str(q.base_fee),
        "tiers": [],
    }
    lines = [base] + [
        {
            "metric": charge.metric,
            "model": charge.model.value,
            "quantity": plain(charge.quantity),
            "billable": plain(charge.billable),
            "amount": charge.amount,
            "unrounded": plain(charge.unrounded),
            "tiers": [
                {
                    "tier": part.tier,
                    "upTo": part.up_to,
                    "units": plain(part.units),
                    "unitAmount": plain(part.unit_amount),
                    "flatAmount": part.flat_amount,
                    "amount": plain(part.amount),
                }
                for part in charge.tiers
            ],
        }
        for charge in q.charges
    ]
    return {"plan": q.plan, "currency": q.currency, "lines": lines, "total": q.total}


def _packages(billable: Decimal, size: int) -> int:
    """`ceil(billable / size)`, from an exact integer division and its remainder."""
    whole, rest = EXACT.divmod(billable, size)
    return int(whole) + (1 if rest > 0 else 0)


def _graduated(tiers: Sequence[Tier], billable: Decimal) -> tuple[TierPart, ...]:
    parts: list[TierPart] = []
    lower = 0
    for number, tier in enumerate(tiers, 1):
        if billable <= lower:
            break
        upper = tier.up_to
        inside = billable if upper is None or billable <= upper else Decimal(upper)
        parts.append(_part(number, tier, EXACT.subtract(inside, lower)))
        if upper is None:
            break
        lower = upper
    return tuple(parts)


def _volume(metric: str, tiers: Sequence[Tier], billable: Decimal) -> tuple[TierPart, ...]:
    if billable == 0:
        return ()
    for number, tier in enumerate(tiers, 1):
        if tier.up_to is None or billable <= tier.up_to:
            return (_part(number, tier, billable),)
    raise ValueError(f"{metric}: no tier holds {plain(billable)} units (the last needs no upTo)")


def _part(number: int, tier: Tier, units: Decimal) -> TierPart:
    unit_amount = to_decimal(tier.unit_amount)
    amount = EXACT.add(multiply(units, unit_amount), tier.flat_amount)
    return TierPart(number, tier.up_to, units, unit_amount, tier.flat_amount, amount)


def _sum(amounts: Iterable[Decimal]) -> Decimal:
    total = _ZERO
    for amount in amounts:
        total = EXACT.add(total, amount)
    return total
