"""All SQL of invoices, their lines, payments, credit notes, numbers and runs."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from tenantry.core.invoices import (
    Invoice,
    InvoiceStatus,
    Line,
    LineKind,
    Payment,
    TaxAmount,
    TierPart,
    Totals,
)
from tenantry.core.money import plain
from tenantry.core.periods import Period
from tenantry.core.resources import Aggregation
from tenantry.core.usage import HourlyTotals
from tenantry.db.subscriptions import party_from_json, party_to_json

# A constant of our own ("tnty" + 2), so no other advisory lock collides.
RUN_LOCK = 0x746E7479_00000002


async def try_run_lock(conn: AsyncConnection) -> bool:
    """The scheduled run's lock (session level): one replica runs it, the others skip."""
    return bool(await conn.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": RUN_LOCK}))


async def release_run_lock(conn: AsyncConnection) -> None:
    await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": RUN_LOCK})


@dataclass(frozen=True)
class InvoiceRow:
    id: str
    boundary: dt.datetime
    status: InvoiceStatus
    discount: int


@dataclass(frozen=True)
class Billed:
    period: Period
    metric: str
    quantity: Decimal
    unrounded: Decimal
    amount: int


_RECORD_BILLED = text(
    "INSERT INTO billed_usage (subscription_uid, period_start, period_end, metric,"
    " quantity, unrounded, amount, invoice_id)"
    " VALUES (:uid, :start, :end, :metric, :q, :u, :a, CAST(:inv AS uuid))"
    " ON CONFLICT (subscription_uid, period_start, metric) DO UPDATE SET"
    " quantity = billed_usage.quantity + EXCLUDED.quantity,"
    " unrounded = billed_usage.unrounded + EXCLUDED.unrounded,"
    " amount = billed_usage.amount + EXCLUDED.amount, invoice_id = EXCLUDED.invoice_id"
)


def _tiers_json(tiers: Sequence[TierPart]) -> str:
    return json.dumps(
        [
            {
                "tier": t.tier,
                "upTo": t.up_to,
                "units": plain(t.units),
                "unitAmount": plain(t.unit_amount),
                "flatAmount": t.flat_amount,
                "amount": plain(t.amount),
            }
            for t in tiers
        ]
    )


def _taxes_json(taxes: Sequence[TaxAmount]) -> str:
    return json.dumps(
        [
            {
                "name": t.name,
                "percentage": plain(t.percentage),
                "inclusive": t.inclusive,
                "taxable": t.taxable,
                "unrounded": plain(t.unrounded),
                "amount": t.amount,
            }
            for t in taxes
        ]
    )


@dataclass(frozen=True)
class InvoiceWrite:
    subscription_uid: str
    tenant_uid: str
    boundary: dt.datetime
    final: bool
    currency: str
    period: Period
    plan_name: str
    lines: Sequence[Line]
    totals: Totals
    discount_name: str | None
    seller: dict[str, Any]
    buyer: dict[str, Any]
    created_at: dt.datetime
    finalize_after: dt.datetime
    # Set when the write finalizes the invoice (in the transaction that took its number).
    number: str | None = None
    issued_at: dt.datetime | None = None
    due_at: dt.datetime | None = None

    @property
    def status(self) -> InvoiceStatus:
        if self.number is None:
            return InvoiceStatus.DRAFT
        # Nothing to collect on a zero or negative total: settled when issued.
        return InvoiceStatus.PAID if self.totals.total <= 0 else InvoiceStatus.OPEN


_INVOICE_VALUES = {
    "status": ":status",
    "number": ":number",
    "issued_at": ":issued_at",
    "due_at": ":due_at",
    "paid_at": "CAST(:paid_at AS timestamptz)",
    "final": ":final",
    "currency": ":currency",
    "period_start": ":period_start",
    "period_end": ":period_end",
    "plan_name": ":plan_name",
    "subtotal": ":subtotal",
    "discount": ":discount",
    "discount_unrounded": ":discount_unrounded",
    "discount_name": ":discount_name",
    "taxes": "CAST(:taxes AS jsonb)",
    "tax": ":tax",
    "total": ":total",
    "reverse_charge": ":reverse_charge",
    "seller": "CAST(:seller AS jsonb)",
    "buyer": "CAST(:buyer AS jsonb)",
}


def _invoice_params(write: InvoiceWrite) -> dict[str, Any]:
    totals = write.totals
    return {
        "status": write.status.value,
        "number": write.number,
        "issued_at": write.issued_at,
        "due_at": write.due_at,
        "paid_at": write.issued_at if write.status == InvoiceStatus.PAID else None,
        "final": write.final,
        "currency": write.currency,
        "period_start": write.period.start,
        "period_end": write.period.end,
        "plan_name": write.plan_name,
        "subtotal": totals.subtotal,
        "discount": totals.discount,
        "discount_unrounded": totals.discount_unrounded,
        "discount_name": write.discount_name if totals.discount else None,
        "taxes": _taxes_json(totals.taxes),
        "tax": totals.tax,
        "total": totals.total,
        "reverse_charge": totals.reverse_charge,
        "seller": json.dumps(write.seller),
        "buyer": json.dumps(write.buyer),
    }


_INSERT_LINE = text(
    "INSERT INTO invoice_lines (invoice_id, position, kind, description, period_start,"
    " period_end, metric, quantity, billable, unit_amount, unrounded, amount, tiers)"
    " VALUES (CAST(:id AS uuid), :position, :kind, :description, :start, :end, :metric,"
    " :quantity, :billable, :unit_amount, :unrounded, :amount, CAST(:tiers AS jsonb))"
)


def _line_params(invoice_id: str, position: int, line: Line) -> dict[str, Any]:
    return {
        "id": invoice_id,
        "position": position,
        "kind": line.kind.value,
        "description": line.description,
        "start": line.period.start,
        "end": line.period.end,
        "metric": line.metric,
        "quantity": line.quantity,
        "billable": line.billable,
        "unit_amount": line.unit_amount,
        "unrounded": line.unrounded,
        "amount": line.amount,
        "tiers": _tiers_json(line.tiers),
    }


# ------------------------------------------------------------------ reading

_INVOICE_COLUMNS = (
    "i.id, i.subscription_uid, i.tenant_uid, i.boundary, i.final, i.status, i.number,"
    " i.currency, i.period_start, i.period_end, i.plan_name, i.subtotal, i.discount,"
    " i.discount_unrounded, i.discount_name, i.taxes, i.tax, i.total, i.reverse_charge,"
    " i.amount_paid, i.amount_credited, i.seller, i.buyer, i.created_at, i.issued_at, i.due_at,"
    " s.namespace, s.name, s.tenant_name"
)


def line_of(r: Any) -> Line:
    """An invoice line from its row (the dashboard's one-statement read passes its own)."""
    return Line(
        kind=LineKind(r.kind),
        description=r.description,
        period=Period(r.period_start, r.period_end),
        unrounded=r.unrounded,
        amount=r.amount,
        metric=r.metric,
        quantity=r.quantity,
        billable=r.billable,
        unit_amount=r.unit_amount,
        tiers=tuple(
            TierPart(
                tier=t["tier"],
                up_to=t["upTo"],
                units=Decimal(t["units"]),
                unit_amount=Decimal(t["unitAmount"]),
                flat_amount=t["flatAmount"],
                amount=Decimal(t["amount"]),
            )
            for t in r.tiers
        ),
    )


def invoice_of(r: Any, lines: Sequence[Line], payments: Sequence[Payment]) -> Invoice:
    """An invoice from its row of `_INVOICE_COLUMNS`, the columns typed as the driver types
    them (the dashboard's one-statement read builds its invoices here too)."""
    return Invoice(
        id=str(r.id),
        number=r.number,
        status=InvoiceStatus(r.status),
        currency=r.currency,
        seller=party_from_json(r.seller),
        buyer=party_from_json(r.buyer),
        period=Period(r.period_start, r.period_end),
        lines=tuple(lines),
        totals=Totals(
            subtotal=r.subtotal,
            discount=r.discount,
            discount_unrounded=r.discount_unrounded,
            taxes=tuple(
                TaxAmount(
                    name=t["name"],
                    percentage=Decimal(t["percentage"]),
                    inclusive=t["inclusive"],
                    taxable=t["taxable"],
                    unrounded=Decimal(t["unrounded"]),
                    amount=t["amount"],
                )
                for t in r.taxes
            ),
            tax=r.tax,
            total=r.total,
            reverse_charge=r.reverse_charge,
        ),
        discount_name=r.discount_name,
        created_at=r.created_at,
        issued_at=r.issued_at,
        due_at=r.due_at,
        amount_paid=r.amount_paid,
        amount_credited=r.amount_credited,
        payments=tuple(payments),
        plan=r.plan_name,
        tenant=f"{r.namespace}/{r.tenant_name}",
        subscription=f"{r.namespace}/{r.name}",
        tenant_uid=r.tenant_uid,
        boundary=r.boundary,
    )


async def _complete(conn: AsyncConnection, rows: Sequence[Any]) -> list[Invoice]:
    ids = [r.id for r in rows]
    if not ids:
        return []
    lines: dict[str, list[Line]] = {}
    for r in await conn.execute(
        text(
            "SELECT * FROM invoice_lines WHERE invoice_id = ANY(:ids) ORDER BY invoice_id, position"
        ),
        {"ids": ids},
    ):
        lines.setdefault(str(r.invoice_id), []).append(line_of(r))
    payments: dict[str, list[Payment]] = {}
    for r in await conn.execute(
        text(
            "SELECT invoice_id, amount, method, reference, paid_at FROM payments"
            " WHERE invoice_id = ANY(:ids) ORDER BY paid_at, id"
        ),
        {"ids": ids},
    ):
        payments.setdefault(str(r.invoice_id), []).append(
            Payment(r.amount, r.method, r.reference, r.paid_at)
        )
    return [invoice_of(r, lines.get(str(r.id), []), payments.get(str(r.id), [])) for r in rows]


async def get_invoice(conn: AsyncConnection, invoice_id: str) -> Invoice | None:
    rows = (
        await conn.execute(
            text(
                f"SELECT {_INVOICE_COLUMNS} FROM invoices i"  # noqa: S608
                " JOIN subscriptions s ON s.uid = i.subscription_uid WHERE i.id = CAST(:id AS uuid)"
            ),
            {"id": invoice_id},
        )
    ).all()
    found = await _complete(conn, rows)
    return found[0] if found else None


async def tenant_invoices(
    conn: AsyncConnection,
    tenant_uid: str,
    *,
    limit: int,
    before: tuple[dt.datetime, str] | None = None,
    include_drafts: bool = True,
) -> list[Invoice]:
    """A tenant's invoices, newest boundary first, `limit` at most, after the cursor
    `before`: the (boundary, id) of the last invoice of the previous page."""
    rows = (
        await conn.execute(
            text(
                f"SELECT {_INVOICE_COLUMNS} FROM invoices i"  # noqa: S608
                " JOIN subscriptions s ON s.uid = i.subscription_uid"
                " WHERE i.tenant_uid = :tenant"
                " AND (CAST(:before AS timestamptz) IS NULL"
                "      OR (i.boundary, i.id) < (:before, CAST(:before_id AS uuid)))"
                " AND (:drafts OR i.status <> 'draft')"
                " ORDER BY i.boundary DESC, i.id DESC LIMIT :limit"
            ),
            {
                "tenant": tenant_uid,
                "before": before[0] if before else None,
                "before_id": before[1] if before else None,
                "drafts": include_drafts,
                "limit": limit,
            },
        )
    ).all()
    return await _complete(conn, rows)


async def lock_invoice(conn: AsyncConnection, invoice_id: str) -> Invoice | None:
    """The invoice, its row locked until the transaction ends."""
    await conn.execute(
        text("SELECT 1 FROM invoices WHERE id = CAST(:id AS uuid) FOR UPDATE"), {"id": invoice_id}
    )
    return await get_invoice(conn, invoice_id)


async def add_payment(
    conn: AsyncConnection, invoice_id: str, amount: int, method: str, reference: str,
    paid_at: dt.datetime,
) -> bool:  # fmt: skip
    """Record a payment; False when this reference was recorded for the invoice already."""
    inserted = await conn.scalar(
        text(
            "INSERT INTO payments (invoice_id, amount, method, reference, paid_at)"
            " VALUES (CAST(:id AS uuid), :amount, :method, :reference, :paid_at)"
            " ON CONFLICT (invoice_id, reference) DO NOTHING RETURNING id"
        ),
        {"id": invoice_id, "amount": amount, "method": method, "reference": reference,
         "paid_at": paid_at},
    )  # fmt: skip
    if inserted is None:
        return False
    await conn.execute(
        text("UPDATE invoices SET amount_paid = amount_paid + :a WHERE id = CAST(:id AS uuid)"),
        {"a": amount, "id": invoice_id},
    )
    return True


async def set_status(
    conn: AsyncConnection, invoice_id: str, status: InvoiceStatus, now: dt.datetime
) -> None:
    column = {"paid": "paid_at", "void": "voided_at"}.get(status.value)
    extra = f", {column} = :now" if column else ""
    await conn.execute(
        text(f"UPDATE invoices SET status = :s{extra} WHERE id = CAST(:id AS uuid)"),  # noqa: S608
        {"s": status.value, "id": invoice_id, "now": now},
    )


async def add_credit_note(
    conn: AsyncConnection, invoice_id: str, number: str, amount: int, reason: str,
    now: dt.datetime,
) -> str:  # fmt: skip
    note_id = await conn.scalar(
        text(
            "INSERT INTO credit_notes (invoice_id, number, amount, reason, created_at)"
            " VALUES (CAST(:id AS uuid), :number, :amount, :reason, :now) RETURNING id"
        ),
        {"id": invoice_id, "number": number, "amount": amount, "reason": reason, "now": now},
    )
    await conn.execute(
        text(
            "UPDATE invoices SET amount_credited = amount_credited + :a"
            " WHERE id = CAST(:id AS uuid)"
        ),
        {"a": amount, "id": invoice_id},
    )
    return str(note_id)


async def credit_notes(conn: AsyncConnection, invoice_id: str) -> list[dict[str, Any]]:
    rows = await conn.execute(
        text(
            "SELECT id, number, amount, reason, created_at FROM credit_notes"
            " WHERE invoice_id = CAST(:id AS uuid) ORDER BY created_at, number"
        ),
        {"id": invoice_id},
    )
    return [
        {"id": str(r.id), "number": r.number, "amount": r.amount, "reason": r.reason,
         "createdAt": r.created_at}
        for r in rows
    ]  # fmt: skip


# -------------------------------------------------------------------- runs


async def start_run(conn: AsyncConnection, scope: str, trigger: str, now: dt.datetime) -> int:
    run_id = await conn.scalar(
        text(
            "INSERT INTO billing_runs (scope, trigger, started_at, state)"
            " VALUES (:scope, :trigger, :now, 'running') RETURNING id"
        ),
        {"scope": scope, "trigger": trigger, "now": now},
    )
    return int(run_id)


async def finish_run(
    conn: AsyncConnection, run_id: int, *, state: str, subscriptions: int, drafted: int,
    finalized: int, error: str | None, now: dt.datetime,
) -> None:  # fmt: skip
    await conn.execute(
        text(
            "UPDATE billing_runs SET state = :state, subscriptions = :subs, drafted = :drafted,"
            " finalized = :finalized, error = :error, finished_at = :now WHERE id = :id"
        ),
        {"id": run_id, "state": state, "subs": subscriptions, "drafted": drafted,
         "finalized": finalized, "error": error, "now": now},
    )  # fmt: skip


def buyer_json(buyer: Any) -> dict[str, Any]:
    return party_to_json(buyer)


# ------------------------------------------------------------ batched runs


async def lock_subscriptions(conn: AsyncConnection, uids: Sequence[str]) -> None:
    """`lock_subscription` for many, in one order, so concurrent runs cannot deadlock."""
    await conn.execute(
        text(
            "SELECT count(pg_advisory_xact_lock(hashtextextended('billing:' || u, 0)))"
            " FROM (SELECT unnest(CAST(:uids AS text[])) AS u ORDER BY 1) AS ordered"
        ),
        {"uids": sorted(uids)},
    )


async def invoice_index(
    conn: AsyncConnection, uids: Sequence[str]
) -> dict[str, dict[dt.datetime, InvoiceRow]]:
    """Each subscription's invoices by boundary."""
    rows = await conn.execute(
        text(
            "SELECT subscription_uid, id, boundary, status, discount FROM invoices"
            " WHERE subscription_uid = ANY(:uids)"
        ),
        {"uids": list(uids)},
    )
    index: dict[str, dict[dt.datetime, InvoiceRow]] = {}
    for r in rows:
        index.setdefault(r.subscription_uid, {})[r.boundary] = InvoiceRow(
            str(r.id), r.boundary, InvoiceStatus(r.status), r.discount
        )
    return index


async def billed_usage_many(
    conn: AsyncConnection, uids: Sequence[str], since: dt.datetime
) -> dict[str, list[Billed]]:
    rows = await conn.execute(
        text(
            "SELECT subscription_uid, period_start, period_end, metric, quantity, unrounded, amount"
            " FROM billed_usage WHERE subscription_uid = ANY(:uids) AND period_end > :since"
            " ORDER BY subscription_uid, period_start, metric"
        ),
        {"uids": list(uids), "since": since},
    )
    found: dict[str, list[Billed]] = {}
    for r in rows:
        found.setdefault(r.subscription_uid, []).append(
            Billed(
                Period(r.period_start, r.period_end), r.metric, r.quantity, r.unrounded, r.amount
            )
        )
    return found


async def period_figures(
    conn: AsyncConnection, wanted: Sequence[tuple[str, Period]]
) -> dict[tuple[str, Period], list[HourlyTotals]]:
    """Each (tenant uid, period)'s hourly rows folded per metric, in one query."""
    if not wanted:
        return {}
    # LATERAL: one index range scan per (tenant, period), never a scan of the whole table.
    rows = await conn.execute(
        text(
            "SELECT q.tenant_uid, q.period_start, q.period_end, a.*"
            " FROM unnest(CAST(:tenants AS text[]), CAST(:starts AS timestamptz[]),"
            "             CAST(:ends AS timestamptz[])) AS q(tenant_uid, period_start, period_end),"
            " LATERAL (SELECT h.metric, h.aggregation, sum(h.value)::bigint AS total,"
            "   max(h.value) AS maximum,"
            # Only `latest` metrics need the newest value: sorting every group costs much.
            "   (array_agg(h.value ORDER BY h.latest_at DESC)"
            "    FILTER (WHERE h.aggregation = 'latest'))[1] AS latest,"
            "   max(h.latest_at) AS latest_at"
            "   FROM usage_hourly h WHERE h.tenant_uid = q.tenant_uid"
            "   AND h.hour >= q.period_start AND h.hour < q.period_end"
            "   GROUP BY h.metric, h.aggregation) AS a"
        ),
        {
            "tenants": [tenant for tenant, _ in wanted],
            "starts": [period.start for _, period in wanted],
            "ends": [period.end for _, period in wanted],
        },
    )
    found: dict[tuple[str, Period], list[HourlyTotals]] = {}
    for r in rows:
        found.setdefault((r.tenant_uid, Period(r.period_start, r.period_end)), []).append(
            HourlyTotals(
                metric=r.metric,
                aggregation=Aggregation(r.aggregation),
                total=r.total,
                maximum=r.maximum,
                latest=r.latest or 0,
                latest_at=r.latest_at,
            )
        )
    return found


async def insert_drafts(conn: AsyncConnection, writes: Sequence[tuple[str, InvoiceWrite]]) -> None:
    """New drafts with ids of the caller's (it holds the subscriptions' locks: no conflict)."""
    if not writes:
        return
    columns = ", ".join(_INVOICE_VALUES)
    values = ", ".join(_INVOICE_VALUES.values())
    await conn.execute(
        text(
            f"INSERT INTO invoices (id, subscription_uid, tenant_uid, boundary, {columns},"  # noqa: S608
            f" created_at, finalize_after) VALUES (CAST(:id AS uuid), :uid, :tenant, :boundary,"
            f" {values}, :created_at, :finalize_after)"
        ),
        [
            {
                **_invoice_params(write),
                "id": invoice_id,
                "uid": write.subscription_uid,
                "tenant": write.tenant_uid,
                "boundary": write.boundary,
                "created_at": write.created_at,
                "finalize_after": write.finalize_after,
            }
            for invoice_id, write in writes
        ],
    )


async def update_drafts(conn: AsyncConnection, writes: Sequence[tuple[str, InvoiceWrite]]) -> None:
    if not writes:
        return
    sets = ", ".join(f"{column} = {value}" for column, value in _INVOICE_VALUES.items())
    await conn.execute(
        text(f"UPDATE invoices SET {sets} WHERE id = CAST(:id AS uuid) AND status = 'draft'"),  # noqa: S608
        [{**_invoice_params(write), "id": invoice_id} for invoice_id, write in writes],
    )
    await conn.execute(
        text("DELETE FROM invoice_lines WHERE invoice_id = ANY(CAST(:ids AS uuid[]))"),
        {"ids": [invoice_id for invoice_id, _ in writes]},
    )


async def write_lines(conn: AsyncConnection, writes: Sequence[tuple[str, InvoiceWrite]]) -> None:
    params = [
        _line_params(invoice_id, position, line)
        for invoice_id, write in writes
        for position, line in enumerate(write.lines, start=1)
    ]
    if params:
        await conn.execute(_INSERT_LINE, params)


async def take_numbers(conn: AsyncConnection, prefix: str, count: int) -> list[str]:
    """`count` consecutive numbers of `prefix` (the row stays locked until commit)."""
    if count == 0:
        return []
    last = int(
        await conn.scalar(
            text(
                "INSERT INTO number_sequences (prefix, last) VALUES (:p, :k)"
                " ON CONFLICT (prefix) DO UPDATE SET last = number_sequences.last + :k"
                " RETURNING last"
            ),
            {"p": prefix, "k": count},
        )
    )
    return [f"{prefix}-{n:06d}" for n in range(last - count + 1, last + 1)]


async def record_billed_many(
    conn: AsyncConnection, billed: Sequence[tuple[str, str, Line]]
) -> None:
    """(subscription uid, invoice id, line): metered and late lines now billed."""
    params = [
        {
            "uid": uid, "start": line.period.start, "end": line.period.end,
            "metric": line.metric, "q": line.quantity or Decimal(0), "u": line.unrounded,
            "a": line.amount, "inv": invoice_id,
        }
        for uid, invoice_id, line in billed
        if line.kind in (LineKind.METERED, LineKind.LATE_USAGE) and line.metric is not None
    ]  # fmt: skip
    if params:
        await conn.execute(_RECORD_BILLED, params)
