"""Money: integer minor units per ISO 4217 currency, and the one rounding step.

Amounts are `int` minor units (cents for USD, yen for JPY, fils for KWD).
Arithmetic that divides (unit prices down to 10^-12, prorations, percentages)
is done in `Decimal` under `EXACT`, whose precision holds 12 decimal places on
quantities up to 10^15 and beyond with room to spare, and is rounded once, per
line, by `round_minor`: half up (away from zero, so a credit rounds like the
charge it mirrors). Never a float. Pure: the standard library only.
"""

from __future__ import annotations

import decimal
from decimal import Decimal

EXACT = decimal.Context(prec=60, rounding=decimal.ROUND_HALF_UP, traps=[decimal.Inexact])
"""Products and sums of prices and quantities are exact under this context; a
division that is not exact (prorations, percentages) is computed with `divide`."""

_DIVIDE = decimal.Context(prec=60, rounding=decimal.ROUND_HALF_EVEN)

# ISO 4217 currencies whose minor unit is not 2 digits (the rest are 2).
_ZERO = "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF"
_THREE = "BHD IQD JOD KWD LYD OMR TND"
_EXPONENTS: dict[str, int] = {
    **dict.fromkeys(_ZERO.split(), 0),
    **dict.fromkeys(_THREE.split(), 3),
    "CLF": 4,
    "UYW": 4,
}


def exponent(currency: str) -> int:
    """Digits after the decimal point of the currency's minor unit (USD 2, JPY 0, KWD 3)."""
    return _EXPONENTS.get(currency.upper(), 2)


def round_minor(amount: Decimal) -> int:
    """Round an exact amount of minor units to an integer, half up (away from zero)."""
    return int(amount.quantize(Decimal(1), rounding=decimal.ROUND_HALF_UP, context=_DIVIDE))


def divide(numerator: Decimal | int, denominator: Decimal | int) -> Decimal:
    """`numerator / denominator` to 60 significant digits: for prorations and percentages,
    whose result is rounded once afterwards."""
    return _DIVIDE.divide(Decimal(numerator), Decimal(denominator))


def multiply(a: Decimal | int, b: Decimal | int) -> Decimal:
    """An exact product (raises `decimal.Inexact` rather than losing a digit)."""
    return EXACT.multiply(Decimal(a), Decimal(b))


def to_decimal(value: str | int) -> Decimal:
    """A decimal string from a resource (`"0.000001"`) or an integer, exactly."""
    result = Decimal(value)
    if not result.is_finite():
        raise ValueError(f"{value!r} is not a finite number")
    return result


def format_amount(amount: int, currency: str) -> str:
    """Minor units as a decimal string in major units: `format_amount(1234, "USD") == "12.34"`."""
    digits = exponent(currency)
    if digits == 0:
        return f"{amount:,}"
    sign = "-" if amount < 0 else ""
    whole, fraction = divmod(abs(amount), 10**digits)
    return f"{sign}{whole:,}.{fraction:0{digits}d}"


def format_money(amount: int, currency: str) -> str:
    """`12.34 USD`: an amount as people read it on an invoice."""
    return f"{format_amount(amount, currency)} {currency.upper()}"


def plain(value: Decimal) -> str:
    """A Decimal as a plain string without exponent or trailing zeros (`1E+3` → `1000`)."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text
