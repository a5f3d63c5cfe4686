"""Invoice PDFs, read back with `pdftotext -layout` as an accountant reads them: the
figures they check, printed with the currency's decimals. No server needed."""

from __future__ import annotations

import datetime as dt
import re
import shutil
import subprocess
from collections.abc import AsyncIterator, Sequence
from decimal import Decimal

import pytest

from tenantry.api.billing.documents import exact_amount, period_dates, render_html
from tenantry.api.billing.pdf import PdfError, PdfRenderer, PdfTimeout
from tenantry.core.invoices import (
    Discount,
    Invoice,
    InvoiceStatus,
    Line,
    LineKind,
    Party,
    Payment,
    TaxRate,
    TierPart,
    totals,
)
from tenantry.core.periods import Period

MARCH = Period(dt.datetime(2030, 3, 1, tzinfo=dt.UTC), dt.datetime(2030, 4, 1, tzinfo=dt.UTC))
APRIL = Period(dt.datetime(2030, 4, 1, tzinfo=dt.UTC), dt.datetime(2030, 5, 1, tzinfo=dt.UTC))
ISSUED = dt.datetime(2030, 4, 1, 0, 5, tzinfo=dt.UTC)

SELLER = Party(
    "Tenantry GmbH", ("Invalidenstraße 1", "10115 Berlin"), "DE", "DE123456789",
    "billing@tenantry.example",
)  # fmt: skip
BUYER = Party(
    "Acme Corp", ("1 Market St", "San Francisco, CA 94105"), "US", "EIN 12-3456789",
    "ap@acme.example",
)  # fmt: skip


def base(amount: int, description: str = "Pro plan") -> Line:
    return Line(
        LineKind.BASE, description, APRIL, Decimal(amount), amount, unit_amount=Decimal(amount)
    )


def per_unit(units: int, unit_amount: str, description: str = "API calls") -> Line:
    exact = Decimal(units) * Decimal(unit_amount)
    return Line(
        LineKind.METERED, description, MARCH, exact, int(exact), metric="calls",
        quantity=Decimal(units), billable=Decimal(units), unit_amount=Decimal(unit_amount),
    )  # fmt: skip


def invoice(
    lines: Sequence[Line],
    *,
    currency: str = "USD",
    number: str | None = "INV-2030-0042",
    buyer: Party = BUYER,
    discount: Discount | None = None,
    tax_rates: Sequence[TaxRate] = (),
    reverse_charge: bool = False,
    amount_paid: int = 0,
    status: InvoiceStatus | None = None,
    payments: tuple[Payment, ...] = (),
) -> Invoice:
    return Invoice(
        id="inv_0042",
        number=number,
        status=status or (InvoiceStatus.OPEN if number else InvoiceStatus.DRAFT),
        currency=currency,
        seller=SELLER,
        buyer=buyer,
        period=MARCH,
        lines=tuple(lines),
        totals=totals(lines, discount=discount, tax_rates=tax_rates, reverse_charge=reverse_charge),
        discount_name=discount.name if discount else None,
        created_at=ISSUED,
        issued_at=ISSUED if number else None,
        due_at=ISSUED + dt.timedelta(days=14) if number else None,
        amount_paid=amount_paid,
        payments=payments,
    )


@pytest.fixture(scope="module")
async def renderer() -> AsyncIterator[PdfRenderer]:
    if shutil.which("pdftotext") is None:
        pytest.fail("pdftotext is missing: `make deps` installs it (poppler-utils)")
    renderer = PdfRenderer()
    try:
        yield renderer
    finally:
        await renderer.close()


async def read_back(renderer: PdfRenderer, document: Invoice) -> str:
    pdf = await renderer.render_pdf(document)
    assert pdf.startswith(b"%PDF-")
    return pdftotext(pdf)


def pdftotext(pdf: bytes) -> str:
    layout = ["pdftotext", "-layout", "-", "-"]
    return subprocess.run(layout, input=pdf, capture_output=True, check=True).stdout.decode()


def row(text: str, label: str) -> str:
    """What follows `label` on the first printed line that has it as a column of its own
    (the line's start, or after a gap): the rest of the line, spaces collapsed."""
    found = re.search(rf"(?:^|  ) *{re.escape(label)}(?: {{2,}}(.*))?$", text, re.MULTILINE)
    assert found, f"no line with {label!r} in:\n{text}"
    return " ".join((found[1] or "").split())


def party_block(text: str) -> str:
    return text[text.index("FROM") : text.index("Description")]


async def test_usd_invoice_with_tiers_discount_and_tax(renderer: PdfRenderer) -> None:
    tiers = (
        TierPart(1, 1000, Decimal(1000), Decimal(0), 0, Decimal(0)),
        TierPart(2, 10000, Decimal(9000), Decimal("0.5"), 0, Decimal(4500)),
        TierPart(3, None, Decimal(15000), Decimal("0.25"), 500, Decimal(4250)),
    )
    calls = Line(
        LineKind.METERED, "API calls (graduated)", MARCH, Decimal(8750), 8750, metric="calls",
        quantity=Decimal(25000), billable=Decimal(25000), tiers=tiers,
    )  # fmt: skip
    document = invoice(
        [base(249900), calls],
        discount=Discount("Launch 10%", percent_off=Decimal(10)),
        tax_rates=[TaxRate("VAT", Decimal(20))],
    )
    text = await read_back(renderer, document)

    assert row(text, "Invoice number") == "INV-2030-0042"
    assert row(text, "Issue date") == "2030-04-01"
    assert row(text, "Due date") == "2030-04-15"
    assert row(text, "Period") == "2030-03-01 – 2030-03-31"
    assert row(text, "Currency") == "USD (2 decimal places)"
    parties = party_block(text)
    for figure in ("Tenantry GmbH", "Tax ID: DE123456789", "Invalidenstraße 1",
                   "Acme Corp", "Tax ID: EIN 12-3456789", "ap@acme.example"):  # fmt: skip
        assert figure in parties
    assert row(text, "Pro plan") == "2,499.00 2,499.00"
    assert "2030-04-01 – 2030-04-30" in text  # the base fee's period, in advance
    assert row(text, "API calls (graduated)") == "25000 87.50"
    assert "Tier 1 (up to 1000): 1000 × 0.00 = 0.00" in text
    assert "Tier 2 (up to 10000): 9000 × 0.005 = 45.00" in text  # half a cent a call
    assert "Tier 3 (over 10000): 15000 × 0.0025 + 5.00 = 42.50" in text
    assert row(text, "Subtotal") == "2,586.50"
    assert row(text, "Discount (Launch 10%)") == "-258.65"
    assert row(text, "VAT 20% (exclusive)") == "465.57"
    assert "on 2,327.85" in text
    assert row(text, "Total") == "2,793.42 USD"
    assert row(text, "Amount paid") == "0.00"
    assert row(text, "Amount due") == "2,793.42 USD"
    assert "Page 1 of 1" in text
    assert "Reverse charge" not in text
    assert "DRAFT" not in text


async def test_jpy_amounts_have_no_decimals(renderer: PdfRenderer) -> None:
    document = invoice(
        [base(9800, "Standard plan"), per_unit(1234, "3")],
        currency="JPY",
        tax_rates=[TaxRate("Consumption tax", Decimal(10))],
    )
    text = await read_back(renderer, document)

    # Whether whole yen are grouped (13,502) is core.money's choice; a decimal point is wrong.
    assert re.fullmatch(r"9,?800 9,?800", row(text, "Standard plan"))
    assert re.fullmatch(r"1234 3 3,?702", row(text, "API calls"))
    assert re.fullmatch(r"13,?502", row(text, "Subtotal"))
    assert re.fullmatch(r"1,?350", row(text, "Consumption tax 10% (exclusive)"))
    assert re.fullmatch(r"14,?852 JPY", row(text, "Total"))
    assert re.fullmatch(r"14,?852 JPY", row(text, "Amount due"))
    assert row(text, "Amount paid") == "0"
    assert row(text, "Currency") == "JPY (0 decimal places)"


async def test_kwd_amounts_have_three_decimals(renderer: PdfRenderer) -> None:
    document = invoice(
        [base(12500, "Business plan"), per_unit(1234, "2.5")],
        currency="KWD",
        amount_paid=5000,
    )
    text = await read_back(renderer, document)

    assert row(text, "Business plan") == "12.500 12.500"
    assert row(text, "API calls") == "1234 0.0025 3.085"  # 2.5 fils a call
    assert row(text, "Subtotal") == "15.585"
    assert row(text, "Total") == "15.585 KWD"
    assert row(text, "Amount paid") == "5.000"
    assert row(text, "Amount due") == "10.585 KWD"
    assert row(text, "Currency") == "KWD (3 decimal places)"


async def test_reverse_charge_invoice(renderer: PdfRenderer) -> None:
    buyer = Party("Société Exemple SARL", ("12 rue de la Paix", "75002 Paris"), "FR",
                  "FR40303265045", "compta@exemple.example")  # fmt: skip
    document = invoice(
        [base(49000)],
        currency="EUR",
        buyer=buyer,
        tax_rates=[TaxRate("VAT", Decimal(19))],
        reverse_charge=True,
    )
    text = await read_back(renderer, document)

    parties = party_block(text)
    assert "Société Exemple SARL" in parties
    assert "Tax ID: FR40303265045" in parties
    assert "FR" in parties.split()
    assert row(text, "VAT 0% (reverse charge)") == "0.00"
    assert row(text, "Total") == "490.00 EUR"
    assert row(text, "Amount due") == "490.00 EUR"
    assert "Reverse charge: VAT to be accounted for by the recipient." in text


async def test_a_draft_says_so(renderer: PdfRenderer) -> None:
    text = await read_back(renderer, invoice([base(4900)], number=None))

    assert row(text, "Invoice number") == "DRAFT"
    assert "Draft: not yet issued, not payable" in text
    assert row(text, "Created") == "2030-04-01"
    assert row(text, "Due date") == "–"
    assert "Invoice DRAFT" in text  # the footer
    assert "INV-" not in text


async def test_a_long_invoice_spans_pages(renderer: PdfRenderer) -> None:
    seats = [base(1000 + n, f"Seat {n:02d}") for n in range(1, 81)]
    text = await read_back(renderer, invoice(seats))

    pages = text.rstrip("\f").split("\f")
    assert len(pages) >= 2
    for number, page in enumerate(pages, 1):
        assert f"Invoice INV-2030-0042 Page {number} of {len(pages)}" in " ".join(page.split())
    for n in range(1, 81):
        amount = f"10.{n:02d}"
        assert row(text, f"Seat {n:02d}") == f"{amount} {amount}"
    assert all("Description" in page for page in pages if "Seat" in page)  # header repeats
    assert row(text, "Subtotal") == "832.40"  # 80 × 10.00 + (1 + ... + 80) cents
    assert row(text, "Amount due") == "832.40 USD"
    assert "Subtotal" in pages[-1]


async def test_a_render_over_its_time_limit_is_stopped(renderer: PdfRenderer) -> None:
    document = invoice([base(4900)])
    with pytest.raises(PdfTimeout, match=r"longer than 0\.001 s"):
        await renderer.render_pdf(document, timeout=0.001)
    assert (await renderer.render_pdf(document)).startswith(b"%PDF-")


async def test_a_closed_renderer_refuses() -> None:
    renderer = PdfRenderer()
    await renderer.close()
    with pytest.raises(PdfError, match="closed"):
        await renderer.render_pdf(invoice([base(4900)]))


def test_html_escapes_what_customers_typed() -> None:
    buyer = Party("<script>alert(1)</script>", ('<img src="file:///etc/passwd">',))
    html = render_html(invoice([base(4900)], buyer=buyer))

    assert "<script>" not in html
    assert "<img" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


@pytest.mark.parametrize(
    ("status", "stamp"),
    [
        (InvoiceStatus.PAID, "PAID"),
        (InvoiceStatus.VOID, "VOID"),
        (InvoiceStatus.UNCOLLECTIBLE, "UNCOLLECTIBLE"),
        (InvoiceStatus.OPEN, None),
    ],
)
def test_html_shows_final_states(status: InvoiceStatus, stamp: str | None) -> None:
    paid = Payment(5880, "card", "ch_123", ISSUED + dt.timedelta(days=3))
    html = render_html(invoice([base(5880)], status=status, payments=(paid,)))

    stamps = re.findall(r'<p class="stamp [a-z]+">([^<]*)</p>', html)
    assert stamps == ([stamp] if stamp else [])
    assert "<td>ch_123</td>" in html  # the payment
    assert "<td>2030-04-04</td>" in html


def test_exact_amounts_keep_their_digits() -> None:
    assert exact_amount(Decimal("0.05"), "USD") == "0.0005"
    assert exact_amount(Decimal("123456.5"), "USD") == "1,234.565"
    assert exact_amount(Decimal("-0.5"), "JPY") == "-0.5"
    assert exact_amount(Decimal("2.5"), "KWD") == "0.0025"
    assert exact_amount(Decimal("4900"), "USD") == "49.00"
    assert period_dates(MARCH) == "2030-03-01 – 2030-03-31"
