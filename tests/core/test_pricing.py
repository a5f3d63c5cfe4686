"""Pricing: each charge model at its edges, and against an independent reference.

`reference_charge` and `reference_quote` price with `fractions.Fraction` and
their own formulation of the rules (whole tiers below the one that holds the
last unit, then part of that one), sharing no code with `core/pricing.py`.
tests/test_quote.py loads them, and the strategies, from this file.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tenantry.core.pricing import price_metered, quote, quote_json
from tenantry.core.resources import ChargeModel, MeteredPrice, PlanSpec, Tier

BIG = 10**15
"""The largest quantity, tier bound or allowance the rules promise to price exactly."""

# ----------------------------------------------------------------- the reference


@dataclass(frozen=True)
class ReferenceCharge:
    billable: Fraction
    unrounded: Fraction
    amount: int
    tiers: tuple[tuple[int, Fraction], ...]  # (tier number, units in it)


def round_half_up(value: Fraction) -> int:
    return (
        math.floor(value + Fraction(1, 2)) if value >= 0 else -math.floor(-value + Fraction(1, 2))
    )


def reference_charge(price: MeteredPrice, quantity: int | Decimal) -> ReferenceCharge:
    billable = max(Fraction(0), Fraction(quantity) - price.allowance)
    tiers: tuple[tuple[int, Fraction], ...] = ()
    if price.model == ChargeModel.PER_UNIT:
        unrounded = billable * Fraction(price.unit_amount)
    elif price.model == ChargeModel.PACKAGE:
        assert price.package_size is not None
        assert price.package_amount is not None
        unrounded = Fraction(math.ceil(billable / price.package_size) * price.package_amount)
    elif billable == 0:
        unrounded = Fraction(0)
    else:
        bounds = [0] + [t.up_to for t in price.tiers[:-1]]  # each tier's lower bound
        k = next(
            i for i, t in enumerate(price.tiers) if t.up_to is None or billable <= t.up_to
        )  # the tier that holds the last billable unit
        last = price.tiers[k]
        if price.model == ChargeModel.VOLUME:
            unrounded = billable * Fraction(last.unit_amount) + last.flat_amount
            tiers = ((k + 1, billable),)
        else:
            full = [
                (Fraction(price.tiers[j].up_to or 0) - bounds[j], price.tiers[j]) for j in range(k)
            ]
            rest = billable - bounds[k]
            unrounded = sum(
                (units * Fraction(t.unit_amount) + t.flat_amount for units, t in full),
                rest * Fraction(last.unit_amount) + last.flat_amount,
            )
            tiers = (*((j + 1, units) for j, (units, _) in enumerate(full)), (k + 1, rest))
    return ReferenceCharge(billable, unrounded, round_half_up(unrounded), tiers)


def reference_quote(plan: PlanSpec, usage: Mapping[str, int | Decimal]) -> dict[str, object]:
    """What a quote must say: per line (metric, billable, unrounded, amount, tiers), the total."""
    lines = [(None, Fraction(1), Fraction(plan.price.amount), plan.price.amount, ())]
    for price in plan.metered_prices:
        charge = reference_charge(price, usage.get(price.metric, 0))
        lines.append((price.metric, charge.billable, charge.unrounded, charge.amount, charge.tiers))
    return {"lines": lines, "total": sum(line[3] for line in lines)}


# ---------------------------------------------------------------- strategies


@st.composite
def unit_amounts(draw: st.DrawFn) -> str:
    """Decimal strings as a Plan holds them: up to 12 places, down to 10^-12."""
    whole = draw(st.sampled_from([0, 0, 1, 5]) | st.integers(0, 10**6))
    places = draw(st.integers(0, 12))
    if places == 0:
        return str(whole)
    fraction = draw(
        st.sampled_from([1, 10**places - 1, 5 * 10 ** (places - 1)])
        | st.integers(0, 10**places - 1)
    )
    return f"{whole}.{fraction:0{places}d}"


bounds = st.integers(1, 1000) | st.integers(1, BIG)
small_or_big = st.sampled_from([0, 1]) | st.integers(0, 1000) | st.integers(0, BIG)


@st.composite
def tier_lists(draw: st.DrawFn, *, flat: bool = True) -> list[Tier]:
    ups = sorted(draw(st.sets(bounds, max_size=5)))
    flats = st.sampled_from([0, 0, 100]) | st.integers(0, 10**9) if flat else st.just(0)
    return [
        Tier(up_to=up, unit_amount=draw(unit_amounts()), flat_amount=draw(flats))
        for up in [*ups, None]
    ]


@st.composite
def metered_prices(draw: st.DrawFn, metric: str = "units") -> MeteredPrice:
    model = draw(st.sampled_from(ChargeModel))
    allowance = draw(st.sampled_from([0, 0, 0, 10]) | small_or_big)
    if model == ChargeModel.PER_UNIT:
        return MeteredPrice(
            metric=metric, model=model, allowance=allowance, unit_amount=draw(unit_amounts())
        )
    if model == ChargeModel.PACKAGE:
        return MeteredPrice(
            metric=metric,
            model=model,
            allowance=allowance,
            package_size=draw(st.integers(1, 1000) | st.integers(1, BIG)),
            package_amount=draw(st.integers(0, 10**9)),
        )
    return MeteredPrice(metric=metric, model=model, allowance=allowance, tiers=draw(tier_lists()))


@st.composite
def quantities(draw: st.DrawFn, price: MeteredPrice) -> int | Decimal:
    """A quantity for `price`, often at an edge: 0, the allowance, a tier bound or a
    package size (each ±1 past the allowance), or up to 10^15; now and then a fraction."""
    edges = [t.up_to for t in price.tiers if t.up_to is not None]
    edges += [price.package_size] if price.package_size else []
    near = [max(0, price.allowance + e + d) for e in [0, *edges] for d in (-1, 0, 1)]
    quantity = draw(st.sampled_from([0, BIG, *near]) | small_or_big)
    if draw(st.integers(0, 9)) == 0:
        return Decimal(quantity) + Decimal(draw(st.integers(1, 999))) / 1000
    return quantity


METRICS = ("api_calls", "devices", "messages", "storage_gb")


@st.composite
def plans(draw: st.DrawFn) -> PlanSpec:
    metrics = draw(st.lists(st.sampled_from(METRICS), min_size=1, max_size=4, unique=True))
    return PlanSpec.model_validate(
        {
            "displayName": "Random",
            "price": {
                "amount": draw(st.integers(0, 10**7)),
                "currency": draw(st.sampled_from(["USD", "EUR", "JPY", "KWD"])),
            },
            "metrics": [{"name": metric} for metric in METRICS],
            "meteredPrices": [draw(metered_prices(metric)).to_wire() for metric in metrics],
        }
    )


@st.composite
def plans_and_usage(draw: st.DrawFn) -> tuple[PlanSpec, dict[str, int | Decimal]]:
    plan = draw(plans())
    usage = {
        price.metric: draw(quantities(price))
        for price in plan.metered_prices
        if draw(st.integers(0, 5))  # now and then a priced metric has no usage
    }
    return plan, usage


# ------------------------------------------------------------------- examples


def per_unit(unit_amount: str, allowance: int = 0) -> MeteredPrice:
    return MeteredPrice(metric="m", unit_amount=unit_amount, allowance=allowance)


def package(size: int, amount: int, allowance: int = 0) -> MeteredPrice:
    return MeteredPrice(
        metric="m", model="package", package_size=size, package_amount=amount, allowance=allowance
    )


def tiered(model: str, *tiers: tuple[int | None, str, int], allowance: int = 0) -> MeteredPrice:
    return MeteredPrice(
        metric="m",
        model=model,
        allowance=allowance,
        tiers=[Tier(up_to=u, unit_amount=a, flat_amount=f) for u, a, f in tiers],
    )


GRADUATED = tiered("graduated", (100, "10", 0), (500, "5", 100), (None, "1", 1000))
VOLUME = tiered("volume", (100, "10", 0), (500, "5", 100), (None, "1", 1000))


@pytest.mark.parametrize(
    ("quantity", "unrounded", "amount"),
    [
        (0, "0", 0),
        (1, "0.000000000001", 0),
        (499_999_999_999, "0.499999999999", 0),
        (500_000_000_000, "0.5", 1),  # half up, not half even
        (2_500_000_000_000, "2.5", 3),
        (BIG, "1000", 1000),
    ],
)
def test_per_unit_down_to_a_trillionth_of_a_minor_unit(
    quantity: int, unrounded: str, amount: int
) -> None:
    charge = price_metered(per_unit("0.000000000001"), quantity)
    assert (charge.unrounded, charge.amount) == (Decimal(unrounded), amount)
    assert charge.unit_amount == Decimal("0.000000000001")
    assert charge.tiers == ()


def test_per_unit_at_10_to_the_15_with_12_places_is_exact() -> None:
    charge = price_metered(per_unit("123456.789012345678"), BIG)
    assert charge.unrounded == Decimal("123456789012345678000")
    assert charge.amount == 123456789012345678000


def test_allowance_bigger_than_the_quantity_bills_nothing() -> None:
    for price in (per_unit("7", allowance=1000), package(10, 50, allowance=1000)):
        charge = price_metered(price, 999)
        assert (charge.billable, charge.unrounded, charge.amount) == (0, 0, 0)
    charge = price_metered(tiered("graduated", (None, "1", 500), allowance=1000), 1000)
    assert (charge.amount, charge.tiers) == (0, ())  # no unit in the tier: no flat fee


def test_allowance_comes_off_before_pricing() -> None:
    charge = price_metered(per_unit("2.5", allowance=100), 103)
    assert (charge.quantity, charge.allowance, charge.billable) == (103, 100, 3)
    assert (charge.unrounded, charge.amount) == (Decimal("7.5"), 8)


@pytest.mark.parametrize(
    ("quantity", "packages"),
    [(0, 0), (1, 1), (99, 1), (100, 1), (101, 2), (BIG, 10**13), (BIG + 1, 10**13 + 1)],
)
def test_package_rounds_up_to_whole_packages(quantity: int, packages: int) -> None:
    charge = price_metered(package(100, 250), quantity)
    assert (charge.package_size, charge.packages) == (100, packages)
    assert (charge.unrounded, charge.amount) == (packages * 250, packages * 250)


def test_package_of_a_fractional_quantity_starts_a_package() -> None:
    assert price_metered(package(100, 250), Decimal("100.001")).packages == 2
    assert price_metered(package(100, 250), Decimal("99.999")).packages == 1
    assert price_metered(package(3, 1, allowance=2), Decimal("2.5")).packages == 1


@pytest.mark.parametrize(
    ("quantity", "unrounded", "tiers"),
    [
        (0, 0, []),
        (1, 10, [(1, 1, 10)]),
        (100, 1000, [(1, 100, 1000)]),  # exactly at the bound: tier 2 not entered
        (101, 1105, [(1, 100, 1000), (2, 1, 105)]),  # one past: tier 2 and its flat fee
        (500, 3100, [(1, 100, 1000), (2, 400, 2100)]),
        (501, 4101, [(1, 100, 1000), (2, 400, 2100), (3, 1, 1001)]),
        (BIG, 3100 + 1000 + BIG - 500, [(1, 100, 1000), (2, 400, 2100), (3, BIG - 500, BIG + 500)]),
    ],
)
def test_graduated_prices_each_tier_slice_and_its_flat_fee(
    quantity: int, unrounded: int, tiers: list[tuple[int, int, int]]
) -> None:
    charge = price_metered(GRADUATED, quantity)
    assert charge.unrounded == unrounded
    assert [(t.tier, t.units, t.amount) for t in charge.tiers] == tiers
    assert all(t.amount == t.units * t.unit_amount + t.flat_amount for t in charge.tiers)
    assert [t.up_to for t in charge.tiers] == [100, 500, None][: len(tiers)]


@pytest.mark.parametrize(
    ("quantity", "tier", "unrounded"),
    [
        (0, None, 0),
        (1, 1, 10),
        (100, 1, 1000),  # at the bound: still tier 1
        (101, 2, 101 * 5 + 100),  # one past: every unit at tier 2's price
        (500, 2, 2600),
        (501, 3, 1501),
        (BIG, 3, BIG + 1000),
    ],
)
def test_volume_prices_all_units_in_the_one_tier(
    quantity: int, tier: int | None, unrounded: int
) -> None:
    charge = price_metered(VOLUME, quantity)
    assert charge.unrounded == unrounded
    if tier is None:
        assert charge.tiers == ()
    else:
        (part,) = charge.tiers
        assert (part.tier, part.units) == (tier, quantity)


def test_fractional_tier_prices_round_once_per_line() -> None:
    price = tiered("graduated", (3, "0.4", 0), (None, "0.000000000001", 0))
    charge = price_metered(price, 4)
    assert charge.unrounded == Decimal("1.200000000001")
    assert charge.amount == 1  # the line rounds, not each tier (which would give 1 + 0)
    assert [t.amount for t in charge.tiers] == [Decimal("1.2"), Decimal("0.000000000001")]


@pytest.mark.parametrize("quantity", [-1, Decimal("-0.5"), Decimal("NaN"), Decimal("Infinity")])
def test_a_negative_or_non_finite_quantity_is_refused(quantity: int | Decimal) -> None:
    with pytest.raises(ValueError, match="≥ 0"):
        price_metered(per_unit("1"), quantity)


def example_plan() -> PlanSpec:
    return PlanSpec(
        display_name="Pro",
        price={"amount": 9900, "currency": "USD"},
        metrics=[{"name": "messages"}, {"name": "devices"}, {"name": "users"}],
        metered_prices=[
            GRADUATED.model_copy(update={"metric": "messages"}),
            MeteredPrice(metric="devices", unit_amount="0.5"),
        ],
    )


def test_quote_counts_a_missing_metric_as_0_and_totals_rounded_lines() -> None:
    q = quote("pro", example_plan(), {"messages": 501, "devices": 3})
    assert (q.plan, q.currency, q.base_fee) == ("pro", "USD", 9900)
    assert [(c.metric, c.unrounded, c.amount) for c in q.charges] == [
        ("messages", 4101, 4101),
        ("devices", Decimal("1.5"), 2),
    ]
    assert q.total == 9900 + 4101 + 2
    assert quote("pro", example_plan(), {}).charges[1].quantity == 0


@pytest.mark.parametrize("metric", ["users", "storage"])
def test_quote_refuses_usage_of_a_metric_without_a_price(metric: str) -> None:
    with pytest.raises(
        ValueError, match=f"no metered price for '{metric}': it prices messages, devices"
    ):
        quote("pro", example_plan(), {metric: 1})


def test_quote_json() -> None:
    q = quote("pro", example_plan(), {"messages": 101, "devices": 3})
    assert quote_json(q) == {
        "plan": "pro",
        "currency": "USD",
        "lines": [
            {"metric": None, "quantity": "1", "billable": "1", "amount": 9900,
             "unrounded": "9900", "tiers": []},
            {"metric": "messages", "model": "graduated", "quantity": "101", "billable": "101",
             "amount": 1105, "unrounded": "1105", "tiers": [
                {"tier": 1, "upTo": 100, "units": "100", "unitAmount": "10", "flatAmount": 0,
                 "amount": "1000"},
                {"tier": 2, "upTo": 500, "units": "1", "unitAmount": "5", "flatAmount": 100,
                 "amount": "105"},
             ]},
            {"metric": "devices", "model": "per_unit", "quantity": "3", "billable": "3",
             "amount": 2, "unrounded": "1.5", "tiers": []},
        ],
        "total": 9900 + 1105 + 2,
    }  # fmt: skip


def test_quote_json_writes_no_exponent() -> None:
    q = quote("pro", example_plan(), {"devices": Decimal("2E+15")})
    (line,) = [line for line in quote_json(q)["lines"] if line["metric"] == "devices"]
    assert (line["quantity"], line["unrounded"]) == ("2000000000000000", "1000000000000000")


# ----------------------------------------------------------------- properties


@settings(max_examples=1000, deadline=None)
@given(st.data())
def test_every_charge_matches_the_reference(data: st.DataObject) -> None:
    price = data.draw(metered_prices())
    for _ in range(4):
        quantity = data.draw(quantities(price))
        charge = price_metered(price, quantity)
        expected = reference_charge(price, quantity)
        assert Fraction(charge.billable) == expected.billable
        assert Fraction(charge.unrounded) == expected.unrounded
        assert charge.amount == expected.amount
        assert [(t.tier, Fraction(t.units)) for t in charge.tiers] == list(expected.tiers)


@settings(max_examples=400, deadline=None)
@given(plans_and_usage())
def test_every_quote_matches_the_reference(
    case: tuple[PlanSpec, dict[str, int | Decimal]],
) -> None:
    plan, usage = case
    q = quote("random", plan, usage)
    expected = reference_quote(plan, usage)
    assert q.total == expected["total"]
    lines = quote_json(q)["lines"]
    assert [
        (line["metric"], Fraction(line["billable"]), Fraction(line["unrounded"]), line["amount"],
         tuple((t["tier"], Fraction(t["units"])) for t in line["tiers"]))
        for line in lines
    ] == expected["lines"]  # fmt: skip
    assert q.total == q.base_fee + sum(c.amount for c in q.charges)
    assert q.total == sum(line["amount"] for line in lines)


def marginal(tiers: list[Tier], a: Fraction, b: Fraction) -> Fraction:
    """What units `(a, a+b]` add, slicing that interval by tier: each tier prices its
    overlap with it, and a tier first entered inside it adds its flat fee."""
    total, lower = Fraction(0), Fraction(0)
    for tier in tiers:
        upper = Fraction(tier.up_to) if tier.up_to is not None else a + b
        overlap = max(Fraction(0), min(a + b, upper) - max(a, lower))
        total += overlap * Fraction(tier.unit_amount)
        if overlap and a <= lower:
            total += tier.flat_amount
        lower = max(lower, upper)
    return total


@settings(max_examples=500, deadline=None)
@given(tier_lists(), small_or_big, small_or_big)
def test_graduated_price_of_a_plus_b_is_price_of_a_plus_the_marginal_b(
    tiers: list[Tier], a: int, b: int
) -> None:
    price = MeteredPrice(metric="m", model="graduated", tiers=tiers)
    before, after = price_metered(price, a), price_metered(price, a + b)
    added = marginal(tiers, Fraction(a), Fraction(b))
    assert Fraction(after.unrounded) == Fraction(before.unrounded) + added
    assert added >= 0  # graduated prices never fall as usage grows


@settings(max_examples=300, deadline=None)
@given(unit_amounts(), small_or_big, small_or_big)
def test_one_unbounded_tier_without_a_flat_fee_is_per_unit(
    unit_amount: str, allowance: int, quantity: int
) -> None:
    flat = per_unit(unit_amount, allowance)
    for model in ("graduated", "volume"):
        single = tiered(model, (None, unit_amount, 0), allowance=allowance)
        a, b = price_metered(single, quantity), price_metered(flat, quantity)
        assert (a.unrounded, a.amount, a.billable) == (b.unrounded, b.amount, b.billable)


@settings(max_examples=500, deadline=None)
@given(st.data())
def test_amounts_are_never_negative_and_round_half_up_once(data: st.DataObject) -> None:
    price = data.draw(metered_prices())
    charge = price_metered(price, data.draw(quantities(price)))
    assert min(charge.unrounded, charge.amount, charge.billable) >= 0
    assert all(t.units > 0 and t.amount >= 0 for t in charge.tiers)
    assert charge.amount == round_half_up(Fraction(charge.unrounded))
    assert isinstance(charge.amount, int)
