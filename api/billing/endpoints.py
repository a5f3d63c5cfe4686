"""Billing routes: invoices, payments, credit notes, runs, revenue; and an instance's
own invoices with its `billing:read` key."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from tenantry.api.auth import AdminActor, Caller, RuntimeDep, admin_token, scoped
from tenantry.api.billing.pdf import PdfError, PdfTimeout
from tenantry.api.billing.schemas import (
    CreditNoteIn,
    CreditNoteOut,
    InvoiceList,
    InvoiceOut,
    PaymentIn,
    RevenueOut,
    RunIn,
    RunOut,
    invoice_out,
    revenue_out,
)
from tenantry.api.errors import (
    Conflict,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
    Unavailable,
    Unprocessable,
    parse_body,
    responses,
)
from tenantry.api.paging import decode as decode_cursor
from tenantry.api.paging import encode as encode_cursor
from tenantry.api.paths import Name, Namespace
from tenantry.api.runtime import Runtime
from tenantry.api.tenants.catalog import existing_tenant
from tenantry.api.usage.endpoints import json_body, read_body
from tenantry.core.invoices import Invoice, InvoiceStatus

router = APIRouter()
admin = [Depends(admin_token)]
MAX_PAGE = 100


def _invoice_id(raw: str) -> str:
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise NotFound(
            f"There is no invoice {raw!r}: invoice ids are UUIDs, as invoice lists show them.",
            code="invoice_not_found",
            details={"id": raw},
        ) from None


async def _tenant_invoices(
    rt: Runtime, tenant_uid: str, limit: int, cursor: str | None, drafts: bool
) -> InvoiceList:
    before = decode_cursor(cursor)
    found = await rt.billing.invoices_of_tenant(
        tenant_uid, limit=limit + 1, before=before, include_drafts=drafts
    )
    page = found[:limit]
    # The cursor names the last invoice shown: newer invoices never shift the pages.
    last = page[-1] if page and len(found) > limit else None
    next_cursor = encode_cursor(last.boundary, last.id) if last and last.boundary else None
    return InvoiceList(invoices=[invoice_out(i) for i in page], next_cursor=next_cursor)


async def _pdf(rt: Runtime, invoice: Invoice) -> Response:
    try:
        document = await rt.pdf.render_pdf(invoice, timeout=rt.billing.settings.pdf_timeout)
    except PdfTimeout as error:
        raise Unavailable(
            f"Rendering the PDF took too long ({error}); try again shortly.",
            code="pdf_timeout",
            headers={"Retry-After": "5"},
        ) from error
    except PdfError as error:
        raise Unavailable(
            f"The PDF could not be rendered ({error}).", code="pdf_unavailable"
        ) from error
    name = invoice.number or f"draft-{invoice.id}"
    return Response(
        document,
        media_type="application/pdf",
        headers={"Content-Disposition": f'inline; filename="{name}.pdf"'},
    )


Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description="Invoices per page.")]
Cursor = Annotated[str | None, Query(description="`nextCursor` of the previous page.")]


# ------------------------------------------------------------------- admin


@router.get(
    "/v1/admin/tenants/{namespace}/{name}/invoices",
    tags=["billing"],
    summary="A tenant's invoices, newest first",
    dependencies=admin,
    responses=responses(Unauthorized, NotFound, Unprocessable, Unavailable),
)
async def tenant_invoices(
    namespace: Namespace, name: Name, rt: RuntimeDep, limit: Limit = 20, cursor: Cursor = None
) -> InvoiceList:
    tenant = await existing_tenant(rt.catalog, namespace, name)
    return await _tenant_invoices(rt, tenant.uid, limit, cursor, drafts=True)


@router.get(
    "/v1/admin/tenants/{namespace}/{name}/invoices/preview",
    tags=["billing"],
    summary="The next invoice as it stands: this period's usage so far, priced",
    dependencies=admin,
    responses=responses(Unauthorized, NotFound, Conflict, Unavailable),
)
async def preview(namespace: Namespace, name: Name, rt: RuntimeDep) -> InvoiceOut:
    tenant = await existing_tenant(rt.catalog, namespace, name)
    return invoice_out(await rt.billing.preview(tenant.uid))


@router.get(
    "/v1/admin/invoices/{invoice_id}",
    tags=["billing"],
    summary="One invoice with its lines, taxes and payments",
    dependencies=admin,
    responses=responses(Unauthorized, NotFound, Unavailable),
)
async def get_invoice(invoice_id: str, rt: RuntimeDep) -> InvoiceOut:
    return invoice_out(await rt.billing.invoice(_invoice_id(invoice_id)))


@router.get(
    "/v1/admin/invoices/{invoice_id}/pdf",
    tags=["billing"],
    summary="The invoice as a PDF document",
    dependencies=admin,
    response_class=Response,
    responses={
        200: {"content": {"application/pdf": {}}, "description": "The PDF."},
        **responses(Unauthorized, NotFound, Unavailable),
    },
)
async def get_invoice_pdf(invoice_id: str, rt: RuntimeDep) -> Response:
    return await _pdf(rt, await rt.billing.invoice(_invoice_id(invoice_id)))


@router.post(
    "/v1/admin/invoices/{invoice_id}/payments",
    tags=["billing"],
    summary="Record a payment (partial payments leave an amount due)",
    dependencies=admin,
    responses=responses(
        Unauthorized, NotFound, PayloadTooLarge, Conflict, Unprocessable, Unavailable
    ),
    openapi_extra=json_body(PaymentIn),
)
async def record_payment(
    invoice_id: str, request: Request, rt: RuntimeDep, by: AdminActor
) -> InvoiceOut:
    payment = parse_body(PaymentIn, await read_body(request, rt.settings.max_body_bytes))
    invoice = await rt.billing.record_payment(
        _invoice_id(invoice_id), payment.amount, payment.method, payment.reference,
        payment.paid_at, by=by,
    )  # fmt: skip
    return invoice_out(invoice)


@router.post(
    "/v1/admin/invoices/{invoice_id}/void",
    tags=["billing"],
    summary="Void an open or uncollectible invoice (it stays, marked void)",
    dependencies=admin,
    responses=responses(Unauthorized, NotFound, Conflict, Unavailable),
)
async def void_invoice(invoice_id: str, rt: RuntimeDep, by: AdminActor) -> InvoiceOut:
    target = InvoiceStatus.VOID
    return invoice_out(await rt.billing.change_status(_invoice_id(invoice_id), target, by=by))


@router.post(
    "/v1/admin/invoices/{invoice_id}/mark-uncollectible",
    tags=["billing"],
    summary="Mark an open invoice uncollectible",
    dependencies=admin,
    responses=responses(Unauthorized, NotFound, Conflict, Unavailable),
)
async def mark_uncollectible(invoice_id: str, rt: RuntimeDep, by: AdminActor) -> InvoiceOut:
    target = InvoiceStatus.UNCOLLECTIBLE
    return invoice_out(await rt.billing.change_status(_invoice_id(invoice_id), target, by=by))


@router.post(
    "/v1/admin/invoices/{invoice_id}/credit-notes",
    tags=["billing"],
    summary="Issue a credit note against an open or paid invoice",
    dependencies=admin,
    responses=responses(
        Unauthorized, NotFound, PayloadTooLarge, Conflict, Unprocessable, Unavailable
    ),
    openapi_extra=json_body(CreditNoteIn),
)
async def credit_note(
    invoice_id: str, request: Request, rt: RuntimeDep, by: AdminActor
) -> CreditNoteOut:
    note = parse_body(CreditNoteIn, await read_body(request, rt.settings.max_body_bytes))
    invoice, number = await rt.billing.credit(
        _invoice_id(invoice_id), note.amount, note.reason, by=by
    )
    return CreditNoteOut(number=number, invoice=invoice_out(invoice))


@router.post(
    "/v1/admin/billing-runs",
    tags=["billing"],
    summary="Run billing now, for every subscription or one tenant's",
    dependencies=admin,
    responses=responses(Unauthorized, NotFound, PayloadTooLarge, Unprocessable, Unavailable),
    openapi_extra=json_body(RunIn, required=False),
)
async def billing_run(request: Request, rt: RuntimeDep, by: AdminActor) -> RunOut:
    body = await read_body(request, rt.settings.max_body_bytes)
    selector = parse_body(RunIn, body).tenant if body.strip() else None
    tenant_uid = None
    if selector is not None:
        tenant_uid = (await existing_tenant(rt.catalog, selector.namespace, selector.name)).uid
    result = await rt.billing.run(tenant_uid=tenant_uid, by=by)
    await rt.collect()
    return RunOut(
        id=result.id,
        state="failed" if result.failed else "succeeded",
        subscriptions=result.subscriptions,
        drafted=result.drafted,
        finalized=result.finalized,
        failed=result.failed,
    )


@router.get(
    "/v1/admin/revenue",
    tags=["billing"],
    summary="MRR, ARR, subscriptions per state, and a month's new, expansion, contraction, churn",
    dependencies=admin,
    responses=responses(Unauthorized, Unprocessable, Unavailable),
)
async def revenue(
    rt: RuntimeDep,
    month: Annotated[
        str | None,
        Query(description="The month of the movements, `YYYY-MM` (UTC); default: this month."),
    ] = None,
) -> RevenueOut:
    now = rt.billing.clock()
    if month is None:
        year, number = now.year, now.month
    else:
        try:
            parsed = dt.datetime.strptime(month, "%Y-%m").replace(tzinfo=dt.UTC)
        except ValueError:
            raise Unprocessable(
                f"month={month!r} is not a month: use YYYY-MM, e.g. 2026-11.", code="invalid_month"
            ) from None
        year, number = parsed.year, parsed.month
    return revenue_out(f"{year:04d}-{number:02d}", await rt.billing.revenue(year, number))


# ---------------------------------------------------------------- instance


BillingReader = Annotated[Caller, Depends(scoped("billing:read"))]


@router.get(
    "/v1/invoices",
    tags=["billing"],
    summary="The calling instance's tenant's issued invoices, newest first",
    responses=responses(Unauthorized, Forbidden, Unprocessable, Unavailable),
)
async def my_invoices(
    rt: RuntimeDep, caller: BillingReader, limit: Limit = 20, cursor: Cursor = None
) -> InvoiceList:
    return await _tenant_invoices(rt, caller.tenant.uid, limit, cursor, drafts=False)


@router.get(
    "/v1/invoices/{invoice_id}/pdf",
    tags=["billing"],
    summary="One of the calling instance's tenant's invoices as a PDF",
    response_class=Response,
    responses={
        200: {"content": {"application/pdf": {}}, "description": "The PDF."},
        **responses(Unauthorized, Forbidden, NotFound, Unavailable),
    },
)
async def my_invoice_pdf(invoice_id: str, rt: RuntimeDep, caller: BillingReader) -> Response:
    invoice = await rt.billing.invoice(_invoice_id(invoice_id))
    # Another tenant's invoice, or a draft, is as unknown as a missing one.
    if invoice.tenant_uid != caller.tenant.uid or invoice.status == InvoiceStatus.DRAFT:
        raise NotFound(
            f"There is no invoice {invoice_id} for this tenant.", code="invoice_not_found"
        )
    return await _pdf(rt, invoice)
