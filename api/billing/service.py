"""Billing runs, invoices, payments and credit notes.

Invariant: one invoice per subscription and boundary, and one number per
finalized invoice, gap-free per prefix, whatever runs twice, crashes halfway
or runs on two replicas at once. Three things hold it, none home-made:
- each subscription is billed in its own transaction, under a PostgreSQL
  advisory lock on its uid, so two runs take turns per subscription and a
  crash loses at most the subscription in flight (its transaction rolls back);
- the unique key `(subscription_uid, boundary)` on invoices;
- numbers come from a row of `number_sequences` updated in the transaction
  that finalizes, so they are taken in commit order and a rollback returns one.

A draft is recomputed on every run until its grace window after the boundary
has passed; then it is finalized: priced one last time, numbered, and what it
billed per period and metric recorded, so usage arriving later is billed once,
as the difference, on the next invoice. An issued invoice never changes:
corrections are credit notes, and voiding is a state.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tenantry.api import metrics
from tenantry.api.billing import repository as repo
from tenantry.api.billing.settings import BillingSettings
from tenantry.api.errors import Conflict, NotFound, Unprocessable
from tenantry.api.outbound.events import Events
from tenantry.core import invoices, lifecycle, outbound
from tenantry.core.clock import Clock
from tenantry.core.invoices import Invoice, InvoiceStatus
from tenantry.core.lifecycle import Boundary, LateUsage, Terms
from tenantry.core.periods import Period
from tenantry.core.revenue import Revenue, revenue
from tenantry.core.usage import period_values
from tenantry.db import audit
from tenantry.db import subscriptions as subscriptions_repository
from tenantry.db.audit import Actor

log = logging.getLogger("tenantry.api.billing")


@dataclass(frozen=True)
class RunResult:
    id: int | None
    subscriptions: int
    drafted: int
    finalized: int
    failed: int


@dataclass(frozen=True)
class Outcome:
    drafted: int = 0
    finalized: int = 0


CHUNK = 250
"""Subscriptions billed in one transaction: few round trips, short locks."""


@dataclass(frozen=True)
class Facts:
    """What the database says that invoices are priced from."""

    figures: dict[tuple[str, Period], dict[str, int]]  # (tenant uid, period): metric figures
    billed: dict[str, list[repo.Billed]]  # subscription uid: what finalized invoices billed

    def late_usage(self, terms: Terms, boundary: Boundary) -> list[LateUsage]:
        """Metrics of periods already billed whose figures have moved since."""
        before = boundary.usage_period.start if boundary.usage_period else boundary.at
        # Events older than the plan accepts cannot arrive: older periods cannot change.
        oldest = boundary.at - dt.timedelta(days=terms.plan.usage_max_age_days + 1)
        late = []
        for item in self.billed.get(terms.uid, ()):
            if not oldest < item.period.end <= before:
                continue
            figure = self.figures.get((terms.tenant_uid, item.period), {}).get(item.metric, 0)
            if Decimal(figure) != item.quantity:
                late.append(
                    LateUsage(
                        item.period, item.metric, item.quantity, item.unrounded, item.amount,
                        Decimal(figure),
                    )
                )  # fmt: skip
        return late


def _open(row: repo.InvoiceRow | None) -> bool:
    """Whether a boundary's invoice is still to be written: missing, or a draft."""
    return row is None or row.status == InvoiceStatus.DRAFT


def _discounted(invoices_by_boundary: dict[dt.datetime, repo.InvoiceRow]) -> list[dt.datetime]:
    """Boundaries whose invoice a coupon discounted (void ones do not count)."""
    return [
        row.boundary
        for row in invoices_by_boundary.values()
        if row.discount > 0 and row.status != InvoiceStatus.VOID
    ]


class BillingService:
    def __init__(
        self, engine: AsyncEngine, settings: BillingSettings, clock: Clock,
        events: Events | None = None,
    ) -> None:  # fmt: skip
        self.engine = engine
        self.settings = settings
        self.clock = clock
        self.events = events or Events(())  # webhooks out, enqueued with each change
        self.seller = settings.seller()

    # ------------------------------------------------------------ runs

    async def run(
        self, *, tenant_uid: str | None = None, trigger: str = "admin", by: Actor | None = None
    ) -> RunResult:
        """Bill every subscription (or one tenant's) up to now; `by` whoever asked for it
        (the audit trail records them), none for scheduled runs."""
        now, started = self.clock(), time.monotonic()
        async with self.engine.begin() as conn:
            run_id = await repo.start_run(conn, tenant_uid or "all", trigger, now)
            if by is not None:
                await audit.record(conn, by, "billing.run_started", tenant_uid or "all",
                                   {"run": run_id})  # fmt: skip
            uids = await subscriptions_repository.all_uids(conn, tenant_uid)
        drafted = finalized = failed = 0
        error: str | None = None
        for start in range(0, len(uids), CHUNK):
            chunk = uids[start : start + CHUNK]
            try:
                outcomes = [await self.bill(chunk, now)]
            except Exception:
                # One subscription's trouble stops no other: bill them one by one.
                log.warning("Billing %d subscriptions together failed; one by one now", len(chunk))
                outcomes = []
                for uid in chunk:
                    try:
                        outcomes.append(await self.bill([uid], now))
                    except Exception as problem:
                        failed += 1
                        error = f"subscription {uid}: {problem}"
                        log.exception("Billing subscription %s failed", uid)
            drafted += sum(o.drafted for o in outcomes)
            finalized += sum(o.finalized for o in outcomes)
        async with self.engine.begin() as conn:
            await repo.finish_run(
                conn, run_id, state="failed" if failed else "succeeded",
                subscriptions=len(uids), drafted=drafted, finalized=finalized, error=error,
                now=self.clock(),
            )  # fmt: skip
        metrics.BILLING_RUN_SECONDS.labels(
            trigger=trigger, result="failed" if failed else "succeeded"
        ).observe(time.monotonic() - started)
        metrics.INVOICES_FINALIZED.inc(finalized)
        if drafted or finalized or failed:
            log.info(
                "Billing run %s: %d subscriptions, %d invoices drafted, %d finalized, %d failed",
                run_id, len(uids), drafted, finalized, failed,
            )  # fmt: skip
        return RunResult(run_id, len(uids), drafted, finalized, failed)

    async def scheduled_run(self) -> RunResult | None:
        """The periodic run: on one replica at a time; None when another has it."""
        async with self.engine.connect() as conn:
            if not await repo.try_run_lock(conn):
                return None
            await conn.commit()
            try:
                return await self.run(trigger="schedule")
            finally:
                await repo.release_run_lock(conn)
                await conn.commit()

    async def bill(self, uids: Sequence[str], now: dt.datetime) -> Outcome:
        """Draft, refresh and finalize the invoices these subscriptions' boundaries call for,
        in one transaction that holds their locks."""
        async with self.engine.begin() as conn:
            # Read under the locks: another run may have billed them a moment ago.
            await repo.lock_subscriptions(conn, uids)
            subscriptions = await subscriptions_repository.load_many(conn, uids)
            index = await repo.invoice_index(conn, uids)
            work = [
                (terms, boundary, index.get(terms.uid, {}).get(boundary.at))
                for terms in subscriptions
                for boundary in lifecycle.boundaries(terms, now)
                if _open(index.get(terms.uid, {}).get(boundary.at))
            ]
            facts = await self._facts(conn, subscriptions, [(t, b) for t, b, _ in work])
            inserts: list[tuple[str, repo.InvoiceWrite]] = []
            updates: list[tuple[str, repo.InvoiceWrite]] = []
            finals: list[tuple[Terms, str, repo.InvoiceWrite]] = []
            discounted = {t.uid: _discounted(index.get(t.uid, {})) for t in subscriptions}
            for terms, boundary, row in work:
                write = self._compose(terms, boundary, facts, discounted[terms.uid], now)
                if write is None:
                    continue
                if write.totals.discount:
                    discounted[terms.uid].append(boundary.at)
                invoice_id = row.id if row else str(uuid.uuid4())
                (updates if row else inserts).append((invoice_id, write))
                if now >= write.finalize_after:
                    finals.append((terms, invoice_id, write))
            # Numbers in boundary order per subscription, taken in this transaction: a
            # rollback gives them back, so they stay gap-free.
            numbers = iter(await repo.take_numbers(conn, self.settings.invoice_prefix, len(finals)))
            due_at = now + dt.timedelta(days=self.settings.due_days)
            issued = {
                invoice_id: dataclasses.replace(
                    write, number=next(numbers), issued_at=now, due_at=due_at
                )
                for _, invoice_id, write in finals
            }
            inserts = [(i, issued.get(i, w)) for i, w in inserts]
            updates = [(i, issued.get(i, w)) for i, w in updates]
            await repo.insert_drafts(conn, inserts)
            await repo.update_drafts(conn, updates)
            await repo.write_lines(conn, [*inserts, *updates])
            await repo.record_billed_many(
                conn, [(t.uid, i, line) for t, i, w in finals for line in w.lines]
            )
            await self.events.finalized(conn, [i for _, i, _ in finals], now)
        for terms, invoice_id, write in finals:
            log.info(
                "Finalized invoice %s for subscription %s/%s: total %d %s",
                issued[invoice_id].number, terms.namespace, terms.name, write.totals.total,
                terms.currency,
            )  # fmt: skip
        return Outcome(len(inserts), len(finals))

    async def _facts(
        self,
        conn: AsyncConnection,
        subscriptions: Sequence[Terms],
        work: Sequence[tuple[Terms, Boundary]],
    ) -> Facts:
        """Usage figures and billed amounts the work needs, read in two queries."""
        oldest = min(
            (b.at - dt.timedelta(days=t.plan.usage_max_age_days + 1) for t, b in work),
            default=None,
        )
        billed = (
            await repo.billed_usage_many(conn, [t.uid for t in subscriptions], oldest)
            if oldest is not None
            else {}
        )
        wanted: set[tuple[str, Period]] = set()
        for terms, boundary in work:
            if boundary.usage_period is not None and boundary.usage_charged:
                wanted.add((terms.tenant_uid, boundary.usage_period))
            for item in billed.get(terms.uid, ()):
                wanted.add((terms.tenant_uid, item.period))
        figures = await repo.period_figures(conn, sorted(wanted, key=lambda w: (w[0], w[1].start)))
        return Facts(
            figures={key: period_values(rows) for key, rows in figures.items()},
            billed=billed,
        )

    def _compose(
        self,
        terms: Terms,
        boundary: Boundary,
        facts: Facts,
        discounted: Sequence[dt.datetime],
        now: dt.datetime,
    ) -> repo.InvoiceWrite | None:
        usage: dict[str, int] = {}
        if boundary.usage_period is not None and boundary.usage_charged:
            usage = facts.figures.get((terms.tenant_uid, boundary.usage_period), {})
        draft = lifecycle.draft_invoice(
            terms, boundary, usage, facts.late_usage(terms, boundary),
            credit_unused_on_cancel=self.settings.credit_unused_on_cancel,
        )  # fmt: skip
        if draft.empty:
            return None
        earlier = sum(1 for at in discounted if at < boundary.at)
        discount = lifecycle.discount_for(terms, boundary, earlier, terms.currency)
        totals = invoices.totals(
            draft.lines,
            discount=discount,
            tax_rates=terms.tax_rates,
            reverse_charge=lifecycle.reverse_charged(terms.buyer, self.seller.country),
        )
        return repo.InvoiceWrite(
            subscription_uid=terms.uid,
            tenant_uid=terms.tenant_uid,
            boundary=boundary.at,
            final=boundary.final,
            currency=terms.currency,
            period=draft.period,
            plan_name=draft.plan_name,
            lines=draft.lines,
            totals=totals,
            discount_name=discount.name if discount else None,
            seller=repo.buyer_json(self.seller),
            buyer=repo.buyer_json(terms.buyer),
            created_at=now,
            finalize_after=boundary.at + dt.timedelta(seconds=self.settings.finalize_grace),
        )

    # ------------------------------------------------------------ reading

    async def invoice(self, invoice_id: str) -> Invoice:
        async with self.engine.connect() as conn:
            found = await repo.get_invoice(conn, invoice_id)
        if found is None:
            raise _no_invoice(invoice_id)
        return found

    async def invoices_of_tenant(
        self,
        tenant_uid: str,
        *,
        limit: int,
        before: tuple[dt.datetime, str] | None,
        include_drafts: bool = True,
    ) -> list[Invoice]:
        async with self.engine.connect() as conn:
            return await repo.tenant_invoices(
                conn, tenant_uid, limit=limit, before=before, include_drafts=include_drafts
            )

    async def preview(self, tenant_uid: str) -> Invoice:
        """The next invoice as it stands now: the current period's usage so far, priced."""
        now = self.clock()
        async with self.engine.connect() as conn:
            terms = await subscriptions_repository.terms_of_tenant(conn, tenant_uid)
            if terms is None:
                raise NotFound(
                    "This tenant has no subscription to preview an invoice for.",
                    code="subscription_not_found",
                )
            period = lifecycle.current_period(terms, now)
            if period is None:
                raise Conflict(
                    f"Subscription {terms.namespace}/{terms.name} has ended: there is no next "
                    "invoice. Its last one is in the invoice list.",
                    code="subscription_ended",
                )
            upcoming = lifecycle.boundaries(terms, period.end)[-1]
            if upcoming.at != period.end:  # canceled before its period ends: bill at the end
                upcoming = dataclasses.replace(upcoming, at=period.end)
            facts = await self._facts(conn, [terms], [(terms, upcoming)])
            index = await repo.invoice_index(conn, [terms.uid])
        write = self._compose(terms, upcoming, facts, _discounted(index.get(terms.uid, {})), now)
        lines = write.lines if write else ()
        totals = write.totals if write else invoices.totals(())
        return Invoice(
            id="preview",
            number=None,
            status=InvoiceStatus.DRAFT,
            currency=terms.currency,
            seller=self.seller,
            buyer=terms.buyer,
            period=write.period if write else period,
            lines=tuple(lines),
            totals=totals,
            discount_name=write.discount_name if write else None,
            created_at=now,
            issued_at=None,
            due_at=None,
            plan=write.plan_name if write else terms.plan_name,
            tenant=f"{terms.namespace}/{terms.tenant_name}",
            subscription=f"{terms.namespace}/{terms.name}",
        )

    # ------------------------------------------------------------ changes

    async def record_payment(
        self, invoice_id: str, amount: int, method: str, reference: str,
        paid_at: dt.datetime | None, *, by: Actor,
    ) -> Invoice:  # fmt: skip
        """Record a payment against an open invoice; the same reference twice is one payment."""
        now = self.clock()
        async with self.engine.begin() as conn:
            invoice = await repo.lock_invoice(conn, invoice_id)
            if invoice is None:
                raise _no_invoice(invoice_id)
            recorded = next((p for p in invoice.payments if p.reference == reference), None)
            if recorded is not None:
                if recorded.amount != amount:
                    raise Conflict(
                        f"A payment with reference {reference!r} of {recorded.amount} is recorded "
                        f"on this invoice already; a different payment needs its own reference.",
                        code="payment_reference_taken",
                        details={"reference": reference, "amount": recorded.amount},
                    )
                return invoice  # a retried request: recorded already
            if invoice.status != InvoiceStatus.OPEN:
                raise Conflict(
                    f"Invoice {invoice.number or invoice.id} is {invoice.status.value}: payments "
                    "are recorded against open invoices only.",
                    code="invoice_not_open",
                    details={"status": invoice.status.value},
                )
            if amount > invoice.amount_due:
                raise Unprocessable(
                    f"The payment of {amount} exceeds the amount due ({invoice.amount_due}, minor "
                    f"units of {invoice.currency}): record at most the amount due.",
                    code="payment_exceeds_amount_due",
                    details={"amountDue": invoice.amount_due},
                )
            await repo.add_payment(conn, invoice_id, amount, method, reference, paid_at or now)
            await audit.record(conn, by, "invoice.payment_recorded", invoice_id, {
                "number": invoice.number, "amount": amount, "currency": invoice.currency,
                "method": method, "reference": reference,
            })  # fmt: skip
            if amount == invoice.amount_due:
                await repo.set_status(conn, invoice_id, InvoiceStatus.PAID, now)
            updated = await repo.get_invoice(conn, invoice_id)
            assert updated is not None
            if updated.status == InvoiceStatus.PAID:
                await self.events.invoice(conn, outbound.INVOICE_PAID, updated, now)
        log.info("Recorded a payment of %d %s on invoice %s", amount, invoice.currency,
                 invoice.number)  # fmt: skip
        return updated

    async def change_status(self, invoice_id: str, target: InvoiceStatus, *, by: Actor) -> Invoice:
        """Void or mark uncollectible an open invoice (an issued invoice is never deleted)."""
        now = self.clock()
        async with self.engine.begin() as conn:
            invoice = await repo.lock_invoice(conn, invoice_id)
            if invoice is None:
                raise _no_invoice(invoice_id)
            if invoice.status == target:
                return invoice
            allowed = {InvoiceStatus.OPEN} | (
                {InvoiceStatus.UNCOLLECTIBLE} if target == InvoiceStatus.VOID else set()
            )
            if invoice.status not in allowed:
                hint = (
                    "a draft is finalized first (it still collects late usage)"
                    if invoice.status == InvoiceStatus.DRAFT
                    else "correct a paid invoice with a credit note"
                )
                raise Conflict(
                    f"Invoice {invoice.number or invoice.id} is {invoice.status.value} and cannot "
                    f"become {target.value}: {hint}.",
                    code="invalid_invoice_transition",
                    details={"status": invoice.status.value, "target": target.value},
                )
            await repo.set_status(conn, invoice_id, target, now)
            await audit.record(conn, by, f"invoice.{target.value}", invoice_id, {
                "number": invoice.number, "from": invoice.status.value,
                "amount_due": invoice.amount_due, "currency": invoice.currency,
            })  # fmt: skip
            updated = await repo.get_invoice(conn, invoice_id)
        assert updated is not None
        return updated

    async def credit(
        self, invoice_id: str, amount: int, reason: str, *, by: Actor
    ) -> tuple[Invoice, str]:
        """Issue a credit note (its own gap-free sequence) against an issued invoice."""
        now = self.clock()
        async with self.engine.begin() as conn:
            invoice = await repo.lock_invoice(conn, invoice_id)
            if invoice is None:
                raise _no_invoice(invoice_id)
            if invoice.status not in (InvoiceStatus.OPEN, InvoiceStatus.PAID):
                raise Conflict(
                    f"Invoice {invoice.number or invoice.id} is {invoice.status.value}: credit "
                    "notes correct open or paid invoices.",
                    code="invalid_invoice_transition",
                )
            creditable = invoice.totals.total - invoice.amount_credited
            if amount > creditable:
                raise Unprocessable(
                    f"The credit of {amount} exceeds what is left to credit on this invoice "
                    f"({creditable} minor units of {invoice.currency}).",
                    code="credit_exceeds_total",
                    details={"creditable": creditable},
                )
            [number] = await repo.take_numbers(conn, self.settings.credit_note_prefix, 1)
            await repo.add_credit_note(conn, invoice_id, number, amount, reason, now)
            await audit.record(conn, by, "invoice.credited", invoice_id, {
                "number": invoice.number, "credit_note": number, "amount": amount,
                "currency": invoice.currency, "reason": reason,
            })  # fmt: skip
            refreshed = await repo.get_invoice(conn, invoice_id)
            assert refreshed is not None
            if refreshed.status == InvoiceStatus.OPEN and refreshed.amount_due == 0:
                await repo.set_status(conn, invoice_id, InvoiceStatus.PAID, now)
                refreshed = await repo.get_invoice(conn, invoice_id)
                assert refreshed is not None
                await self.events.invoice(conn, outbound.INVOICE_PAID, refreshed, now)
        assert refreshed is not None
        return refreshed, number

    async def revenue(self, year: int, month: int) -> Revenue:
        return await revenue_of(self.engine, year, month, self.clock())

    async def credit_notes(self, invoice_id: str) -> Sequence[dict[str, object]]:
        async with self.engine.connect() as conn:
            return await repo.credit_notes(conn, invoice_id)


def _no_invoice(invoice_id: str) -> NotFound:
    return NotFound(
        f"There is no invoice {invoice_id} (see GET /v1/admin/tenants/{{namespace}}/{{name}}/"
        "invoices).",
        code="invoice_not_found",
        details={"id": invoice_id},
    )


async def revenue_of(engine: AsyncEngine, year: int, month: int, now: dt.datetime) -> Revenue:
    """MRR, ARR, states and the month's movements (see core/revenue.py for definitions)."""
    async with engine.connect() as conn:
        terms = await subscriptions_repository.load_many(
            conn, await subscriptions_repository.all_uids(conn)
        )
        overdue = await subscriptions_repository.overdue_since_all(conn)
        past_due = await subscriptions_repository.past_due_amounts(conn, now)
    states = [
        (
            t,
            lifecycle.state_at(
                t, lifecycle.BillingFacts(overdue_since=overdue.get(t.uid)), now
            ).value,
        )
        for t in terms
    ]
    return revenue(states, year=year, month=month, now=now, past_due=past_due)
