"""Invoice arithmetic: proration, discounts, taxes and totals, in minor units.

Expected amounts in the examples were worked out by hand (the fraction and the
rounding are written beside each); the properties compare the code with a
reference that prices with `fractions.Fraction` and shares no code with it.
"""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tenantry.core.invoices import (
    Discount,
    Line,
    LineKind,
    TaxRate,
    discount_amount,
    prorated,
    totals,
)
from tenantry.core.money import exponent, format_amount, format_money, round_minor
from tenantry.core.periods import BillingCycle, Interval, Period

DAY = 86_400


def at(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, second, tzinfo=dt.UTC)


def round_half_up(value: Fraction) -> int:
    """Half away from zero, as a credit rounds like the charge it mirrors."""
    if value < 0:
        return -round_half_up(-value)
    return math.floor(value + Fraction(1, 2))


JANUARY = Period(at(2026, 1, 1), at(2026, 2, 1))


def line(kind: LineKind, amount: int) -> Line:
    return Line(kind, kind.value, JANUARY, Decimal(amount), amount)


def base(amount: int) -> Line:
    return line(LineKind.BASE, amount)


def metered(amount: int) -> Line:
    return line(LineKind.METERED, amount)


def proration(amount: int) -> Line:
    return line(LineKind.PRORATION, amount)


VAT = TaxRate("VAT", Decimal(19))
VAT_INCLUDED = TaxRate("VAT", Decimal(19), inclusive=True)


# ------------------------------------------------------------------ money


def test_currency_exponents() -> None:
    assert (exponent("USD"), exponent("EUR"), exponent("JPY"), exponent("KWD")) == (2, 2, 0, 3)
    assert exponent("jpy") == 0


def test_rounding_is_half_up_away_from_zero() -> None:
    assert [round_minor(Decimal(v)) for v in ("0.5", "1.5", "2.5", "2.4999")] == [1, 2, 3, 2]
    assert [round_minor(Decimal(v)) for v in ("-0.5", "-2.5", "-2.4999")] == [-1, -3, -2]


def test_amounts_print_with_their_currency_decimals() -> None:
    assert format_amount(123456, "USD") == "1,234.56"
    assert format_amount(-5, "USD") == "-0.05"
    assert format_amount(12345, "KWD") == "12.345"
    assert format_money(1980, "jpy") == "1,980 JPY"
    assert format_amount(1234567, "JPY") == "1,234,567"  # grouped like the others


# ------------------------------------------------------------- proration


@pytest.mark.parametrize(
    ("period", "since", "expected"),
    [
        # 31 days, 21 left: 3000 × 21/31 = 2032.26
        (Period(at(2026, 1, 1), at(2026, 2, 1)), at(2026, 1, 11), 2032),
        # 30 days, 20 left: 3000 × 20/30 = 2000 exactly
        (Period(at(2026, 4, 1), at(2026, 5, 1)), at(2026, 4, 11), 2000),
        # 28 days, 20 left: 3000 × 20/28 = 2142.86
        (Period(at(2026, 2, 1), at(2026, 3, 1)), at(2026, 2, 9), 2143),
        # leap February, 29 days, 20 left: 3000 × 20/29 = 2068.97
        (Period(at(2028, 2, 1), at(2028, 3, 1)), at(2028, 2, 10), 2069),
        # by the second: 1 769 104 s of 2 678 400 left, 3000 × that = 1981.52
        (Period(at(2026, 1, 1), at(2026, 2, 1)), at(2026, 1, 11, 12, 34, 56), 1982),
        # the last second of a 31-day month: 3000 / 2 678 400 = 0.0011
        (Period(at(2026, 1, 1), at(2026, 2, 1)), at(2026, 1, 31, 23, 59, 59), 0),
        # before the period: all of it; at or after its end: nothing
        (Period(at(2026, 1, 1), at(2026, 2, 1)), at(2025, 12, 20), 3000),
        (Period(at(2026, 1, 1), at(2026, 2, 1)), at(2026, 2, 1), 0),
        (Period(at(2026, 1, 1), at(2026, 2, 1)), at(2026, 3, 1), 0),
    ],
)
def test_prorated_share_of_3000(period: Period, since: dt.datetime, expected: int) -> None:
    unrounded, amount = prorated(3000, period, since)
    assert amount == expected
    assert round_minor(unrounded) == amount


def test_prorated_keeps_the_unrounded_amount() -> None:
    unrounded, amount = prorated(3000, Period(at(2026, 1, 1), at(2026, 2, 1)), at(2026, 1, 11))
    assert unrounded.quantize(Decimal("0.000001")) == Decimal("2032.258065")  # 63000/31
    assert amount == 2032


def test_prorated_half_a_minor_unit_rounds_up_and_a_credit_mirrors_it() -> None:
    two_days = Period(at(2026, 1, 1), at(2026, 1, 3))
    unrounded, amount = prorated(1, two_days, at(2026, 1, 2))
    assert (unrounded, amount) == (Decimal("0.5"), 1)
    assert round_minor(-unrounded) == -1


@pytest.mark.parametrize(
    ("moment", "days", "credit_10_days"),
    [
        (at(2027, 2, 10), 28, 1071),  # [Jan 31, Feb 28) 2027: 3000 × 10/28 = 1071.43
        (at(2028, 2, 10), 29, 1034),  # [Jan 31, Feb 29) 2028: 3000 × 10/29 = 1034.48
        (at(2028, 3, 10), 31, 968),  # [Feb 29, Mar 31) 2028: 3000 × 10/31 = 967.74
        (at(2028, 4, 10), 30, 1000),  # [Mar 31, Apr 30) 2028: 3000 × 10/30
    ],
)
def test_prorated_over_the_periods_of_anchor_day_31(
    moment: dt.datetime, days: int, credit_10_days: int
) -> None:
    cycle = BillingCycle(start=at(moment.year, 1, 31), anchor_day=31)
    period = cycle.period_at(moment)
    assert period.end - period.start == dt.timedelta(days=days)
    assert prorated(3000, period, period.end - dt.timedelta(days=10))[1] == credit_10_days


# --------------------------------------------------------------- discount


def test_percent_discount_is_rounded_once_on_the_subtotal() -> None:
    result = totals([base(10000), metered(2345)], discount=Discount("Launch", Decimal(15)))
    assert result.subtotal == 12345
    assert result.discount_unrounded == Decimal("1851.75")  # 12345 × 15%
    assert result.discount == 1852
    assert result.total == 12345 - 1852


def test_fractional_percent_discount() -> None:
    result = totals([base(999)], discount=Discount("Odd", Decimal("12.5")))
    assert result.discount == 125  # 999 × 12.5% = 124.875
    assert result.total == 874


def test_amount_off_is_capped_at_the_subtotal() -> None:
    result = totals([base(3000)], discount=Discount("Big", amount_off=5000), tax_rates=[VAT])
    assert (result.discount, result.tax, result.total) == (3000, 0, 0)


def test_amount_off_below_the_subtotal() -> None:
    result = totals([base(3000), metered(250)], discount=Discount("Five", amount_off=500))
    assert (result.subtotal, result.discount, result.total) == (3250, 500, 2750)


def test_percent_discount_with_prorations_takes_its_share_of_base_and_metered_lines() -> None:
    # Next period's base 9000 and metered 100 are discounted; the prorations are not.
    lines = [base(9000), proration(-2032), proration(6097), metered(100)]
    result = totals(lines, discount=Discount("Twenty", Decimal(20)))
    assert result.subtotal == 13165
    assert result.discount == 1820  # 20% of 9100
    assert result.total == 13165 - 1820


def test_amount_off_with_prorations_is_capped_at_the_subtotal() -> None:
    lines = [base(3000), proration(-9000), proration(7000)]
    result = totals(lines, discount=Discount("Big", amount_off=2500))
    assert result.subtotal == 1000
    assert (result.discount, result.total) == (1000, 0)


def test_percent_discount_never_exceeds_a_subtotal_reduced_by_credits() -> None:
    lines = [base(1000), proration(-9000), proration(8500)]
    result = totals(lines, discount=Discount("All", Decimal(100)))
    assert result.subtotal == 500
    assert (result.discount, result.total) == (500, 0)  # 100% of 1000, capped at 500


def test_a_credit_only_invoice_gets_no_discount() -> None:
    downgrade = [proration(-6097), proration(2032)]  # back to a cheaper plan
    for coupon in (Discount("Twenty", Decimal(20)), Discount("Five", amount_off=500)):
        result = totals(downgrade, discount=coupon)
        assert (result.subtotal, result.discount, result.total) == (-4065, 0, -4065)
    cancel = [line(LineKind.CANCEL_CREDIT, -435)]
    assert totals(cancel, discount=Discount("Five", amount_off=500)).discount == 0


def test_a_negative_subtotal_is_not_discounted_even_with_usage_on_it() -> None:
    lines = [metered(1000), line(LineKind.CANCEL_CREDIT, -1500)]
    result = totals(lines, discount=Discount("Twenty", Decimal(20)))
    assert (result.subtotal, result.discount, result.total) == (-500, 0, -500)


def test_discount_amount_alone() -> None:
    assert discount_amount(12345, None) == (Decimal(0), 0)
    assert discount_amount(0, Discount("Twenty", Decimal(20))) == (Decimal(0), 0)
    assert discount_amount(-100, Discount("Five", amount_off=5)) == (Decimal(0), 0)
    assert discount_amount(300, Discount("Five", amount_off=500)) == (Decimal(300), 300)


# ------------------------------------------------------------------ taxes


def test_exclusive_tax_is_added_once_per_rate() -> None:
    result = totals([base(10000), metered(2345)], tax_rates=[VAT])
    (vat,) = result.taxes
    assert vat.taxable == 12345
    assert vat.unrounded == Decimal("2345.55")  # 12345 × 19/100
    assert (vat.amount, result.tax, result.total) == (2346, 2346, 12345 + 2346)


def test_inclusive_tax_is_the_part_inside() -> None:
    result = totals([base(11900)], tax_rates=[VAT_INCLUDED])
    assert result.taxes[0].amount == 1900  # 11900 × 19/119
    assert (result.tax, result.total) == (0, 11900)
    assert totals([base(10000)], tax_rates=[VAT_INCLUDED]).taxes[0].amount == 1597  # 1596.64


def test_tax_applies_to_the_discounted_subtotal() -> None:
    result = totals(
        [base(10000), metered(2345)], discount=Discount("Launch", Decimal(15)), tax_rates=[VAT]
    )
    assert result.taxes[0].taxable == 10493  # 12345 - 1852
    assert result.tax == 1994  # 10493 × 19% = 1993.67
    assert result.total == 10493 + 1994


def test_two_exclusive_rates_are_rounded_separately() -> None:
    gst, qst = TaxRate("GST", Decimal(5)), TaxRate("QST", Decimal("9.975"))
    result = totals([base(10000)], tax_rates=[gst, qst])
    assert [t.amount for t in result.taxes] == [500, 998]  # 500, 997.5
    assert result.total == 11498


def test_inclusive_and_exclusive_rates_together() -> None:
    result = totals([base(11900)], tax_rates=[VAT_INCLUDED, TaxRate("Levy", Decimal(1))])
    assert [t.amount for t in result.taxes] == [1900, 119]
    assert (result.tax, result.total) == (119, 12019)


def test_reverse_charge_has_rate_zero_and_says_so() -> None:
    result = totals([base(10000)], tax_rates=[VAT, VAT_INCLUDED], reverse_charge=True)
    assert result.reverse_charge
    assert [(t.percentage, t.amount) for t in result.taxes] == [(0, 0), (0, 0)]
    assert (result.tax, result.total) == (0, 10000)
    assert not totals([base(10000)], tax_rates=[VAT]).reverse_charge


def test_a_credit_invoice_credits_its_tax() -> None:
    result = totals([line(LineKind.CANCEL_CREDIT, -3226)], tax_rates=[VAT])
    assert result.tax == -613  # -3226 × 19% = -612.94
    assert result.total == -3839


# ------------------------------------------------------- JPY and KWD


def test_yen_have_no_minor_unit() -> None:
    period = Period(at(2026, 1, 1), at(2026, 2, 1))
    assert prorated(1980, period, at(2026, 1, 11))[1] == 1341  # 1980 × 21/31 = 1341.29
    result = totals([base(1980)], tax_rates=[TaxRate("Consumption tax", Decimal(8))])
    assert (result.tax, result.total) == (158, 2138)  # 1980 × 8% = 158.4
    inclusive = totals([base(1100)], tax_rates=[TaxRate("JCT", Decimal(10), inclusive=True)])
    assert inclusive.taxes[0].amount == 100
    assert format_money(result.total, "JPY") == "2,138 JPY"


def test_dinars_have_three_decimals() -> None:
    result = totals(
        [base(12345)],
        discount=Discount("Fifteen", Decimal(15)),
        tax_rates=[TaxRate("VAT", Decimal(5))],
    )
    assert result.discount == 1852  # 12345 × 15% = 1851.75 fils
    assert result.tax == 525  # 10493 × 5% = 524.65
    assert format_money(result.total, "KWD") == "11.018 KWD"


# ------------------------------------------------------------- properties

NON_NEGATIVE_KINDS = (LineKind.BASE, LineKind.METERED)
DISCOUNTED_KINDS = (LineKind.BASE, LineKind.METERED)


@st.composite
def lines_strategy(draw: st.DrawFn, *, non_negative: bool = False) -> list[Line]:
    kinds = NON_NEGATIVE_KINDS if non_negative else tuple(LineKind)
    result = []
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.sampled_from(kinds))
        if kind in NON_NEGATIVE_KINDS:
            amount = draw(st.integers(0, 10**9))
        elif kind == LineKind.CANCEL_CREDIT:
            amount = draw(st.integers(-(10**9), -1))
        else:
            amount = draw(st.integers(-(10**9), 10**9))
        result.append(line(kind, amount))
    return result


percentages = st.integers(0, 100_000_000).map(lambda n: Decimal(n).scaleb(-6))
discounts = st.one_of(
    st.none(),
    percentages.map(lambda p: Discount("Percent", percent_off=p)),
    st.integers(1, 10**9).map(lambda a: Discount("Amount", amount_off=a)),
)
rates = st.lists(
    st.builds(TaxRate, name=st.just("Tax"), percentage=percentages, inclusive=st.booleans()),
    max_size=3,
)


def reference_discount(lines: list[Line], discount: Discount | None) -> int:
    subtotal = sum(item.amount for item in lines)
    discounted = sum(item.amount for item in lines if item.kind in DISCOUNTED_KINDS)
    if discount is None or subtotal <= 0 or discounted <= 0:
        return 0
    if discount.percent_off is not None:
        share = round_half_up(Fraction(discount.percent_off) * discounted / 100)
    else:
        share = discount.amount_off or 0
    return min(share, discounted, subtotal)


def reference_tax(taxable: int, rate: TaxRate) -> int:
    p = Fraction(rate.percentage)
    return round_half_up(taxable * p / (100 + p) if rate.inclusive else taxable * p / 100)


@settings(max_examples=300, deadline=None)
@given(lines_strategy(), discounts, rates, st.booleans())
def test_totals_match_the_reference(
    lines: list[Line], discount: Discount | None, tax_rates: list[TaxRate], reverse: bool
) -> None:
    result = totals(lines, discount=discount, tax_rates=tax_rates, reverse_charge=reverse)
    assert result.subtotal == sum(item.amount for item in lines)
    assert result.discount == reference_discount(lines, discount)
    assert round_minor(result.discount_unrounded) == result.discount
    taxable = result.subtotal - result.discount
    expected_taxes = [0 if reverse else reference_tax(taxable, rate) for rate in tax_rates]
    assert [t.amount for t in result.taxes] == expected_taxes
    assert all(t.taxable == taxable for t in result.taxes)
    exclusive = sum(t.amount for t in result.taxes if not t.inclusive)
    assert result.tax == exclusive
    assert result.total == result.subtotal - result.discount + exclusive
    assert 0 <= result.discount <= max(result.subtotal, 0)


@settings(max_examples=200, deadline=None)
@given(lines_strategy(non_negative=True), discounts, rates)
def test_no_amount_is_negative_without_a_credit_line(
    lines: list[Line], discount: Discount | None, tax_rates: list[TaxRate]
) -> None:
    result = totals(lines, discount=discount, tax_rates=tax_rates)
    assert result.subtotal >= 0
    assert 0 <= result.discount <= result.subtotal
    assert all(t.amount >= 0 for t in result.taxes)
    assert all(t.amount <= t.taxable for t in result.taxes if t.inclusive)
    assert result.total >= 0


moments = st.integers(0, 3 * 366 * DAY).map(lambda s: at(2026, 1, 1) + dt.timedelta(seconds=s))


@settings(max_examples=300, deadline=None)
@given(
    start=moments,
    anchor=st.integers(1, 31),
    interval=st.sampled_from(list(Interval)),
    inside=st.integers(0, 800 * DAY),
    offset=st.integers(-2 * DAY, 400 * DAY),
    amount=st.integers(0, 10**9),
)
def test_proration_fraction_stays_within_the_amount(
    start: dt.datetime,
    anchor: int,
    interval: Interval,
    inside: int,
    offset: int,
    amount: int,
) -> None:
    cycle = BillingCycle(start=start, interval=interval, anchor_day=anchor)
    period = cycle.period_at(start + dt.timedelta(seconds=inside))
    since = period.start + dt.timedelta(seconds=offset)
    unrounded, rounded = prorated(amount, period, since)
    assert 0 <= unrounded <= amount
    assert 0 <= rounded <= amount
    length = (period.end - period.start) // dt.timedelta(seconds=1)
    remaining = min(max(0, (period.end - since) // dt.timedelta(seconds=1)), length)
    assert rounded == round_half_up(Fraction(amount * remaining, length))
    # The credit for the unused part and the charge for it at the same price cancel out.
    assert round_minor(-unrounded) + rounded == 0
