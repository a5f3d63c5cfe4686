"""Invoice documents: an `Invoice` as HTML, from one template and one stylesheet.

`templates/invoice.html` is the document and `templates/invoice.css` its look;
what only paper needs (A4, margins, "Page 1 of N") sits in `@page` rules, which
a browser ignores. The stylesheet is inlined, so the HTML stands alone: `pdf`
prints it as it is, and a dashboard can extend the template (blocks `head` and
`styles`) to link it instead.

Every figure goes through a filter of this module, never through a float:
amounts are integer minor units printed with their currency's ISO 4217 decimals
(`core.money.format_amount`: JPY 0, USD 2, KWD 3); unit prices and tier amounts,
exact decimals of minor units, keep every digit they have; dates are
`YYYY-MM-DD` in UTC. Autoescaped: a name or an address is text, never markup.
"""

from __future__ import annotations

import datetime as dt
import functools
from decimal import Decimal

from jinja2 import Environment, PackageLoader, StrictUndefined

from tenantry.core.invoices import Invoice, InvoiceStatus
from tenantry.core.money import exponent, format_amount, format_money, plain
from tenantry.core.periods import Period


def render_html(invoice: Invoice) -> str:
    """The invoice as a standalone HTML document (stylesheet inlined)."""
    template = _environment().get_template("invoice.html")
    return template.render(
        invoice=invoice,
        draft=invoice.number is None or invoice.status == InvoiceStatus.DRAFT,
    )


@functools.cache
def _environment() -> Environment:
    environment = Environment(
        loader=PackageLoader("tenantry.api.billing", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters.update(
        amount=format_amount,
        money=format_money,
        exact=exact_amount,
        decimal=plain,
        date=utc_date,
        period=period_dates,
    )
    environment.globals["exponent"] = exponent
    return environment


def exact_amount(value: Decimal, currency: str) -> str:
    """Exact minor units in major units, with at least the currency's decimals and more
    when the value has them: a unit price of 0.05 cents is `0.0005` (USD)."""
    if value == value.to_integral_value():
        return format_amount(int(value), currency)
    digits = exponent(currency)
    text = plain(value.scaleb(-digits))
    sign, text = ("-", text[1:]) if text.startswith("-") else ("", text)
    whole, _, fraction = text.partition(".")
    # Group the whole part as `format_amount` does, so a column reads alike.
    grouped = format_amount(int(whole) * 10**digits, currency).partition(".")[0]
    return f"{sign}{grouped}.{fraction}"


def utc_date(moment: dt.datetime) -> str:
    """`YYYY-MM-DD` of the moment in UTC."""
    if moment.tzinfo is None:
        raise ValueError(f"{moment!r} has no time zone; invoices hold UTC moments")
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d")


def period_dates(period: Period) -> str:
    """The period as the days it covers, both included: `[Mar 1, Apr 1)` prints as
    `2030-03-01 – 2030-03-31`, as a reader expects."""
    last = max(period.start, period.end - dt.timedelta(microseconds=1))
    return f"{utc_date(period.start)} – {utc_date(last)}"
