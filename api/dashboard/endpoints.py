"""The dashboard's routes: HTML under `/dashboard/` (left out of the OpenAPI document),
and two JSON routes that make a customer's link (documented).

Team pages need a session (`session.py`); a browser without one is sent to
the sign-in page. A page, which changes nothing, looks its session's sign-out up
while it reads (PageRoute sends nothing before the answer); a form, before it
acts. Every form posts its CSRF token. Customer pages take their
signed link in the path and show that one tenant only: an invoice of another
tenant through it is as unknown as a missing one. Refusals render as a page
with the API's own message and status.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hmac
import logging
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Annotated, Any
from urllib.parse import parse_qs, quote, urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from tenantry.api.auth import Caller, RuntimeDep, admin_token, scoped, utcnow
from tenantry.api.billing.pdf import PdfError, PdfTimeout
from tenantry.api.dashboard import keys, views
from tenantry.api.dashboard.fleet import HEALTHS, Query, select
from tenantry.api.dashboard.service import CUSTOMER_LINK, Dashboard, static_file
from tenantry.api.dashboard.session import Session, SignInRequired
from tenantry.api.errors import (
    ApiError,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
    Unavailable,
    responses,
)
from tenantry.api.paths import Name, Namespace
from tenantry.api.runtime import Runtime
from tenantry.api.tenants.catalog import Tenant, existing_tenant
from tenantry.core.invoices import Invoice, InvoiceStatus
from tenantry.db.audit import Actor

log = logging.getLogger("tenantry.api.dashboard")

MAX_FORM = 8 * 1024
HEADERS = {
    # The customer's link is in the path: never sent on to another site.
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'self'; base-uri 'none'; object-src 'none'",
}


class PageRoute(APIRoute):
    """Refusals as pages, and a missing session as a trip to the sign-in page."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def page(request: Request) -> Response:
            began = time.perf_counter()
            try:
                try:
                    response = await handle(request)
                finally:
                    await _still_signed_in(request)
            except SignInRequired:
                target = quote(
                    request.url.path + (f"?{request.url.query}" if request.url.query else ""),
                    safe="",
                )
                response = RedirectResponse(f"/dashboard/login?next={target}", status_code=303)
            except ApiError as error:
                response = _render(
                    request, "error.html", status=error.status_code, error=error, session=None
                )
                response.headers.update(error.headers)
            response.headers.update(HEADERS)
            # What the page cost here, for browsers' developer tools and bench/dashboard.py.
            response.headers["Server-Timing"] = (
                f"app;dur={(time.perf_counter() - began) * 1000:.2f}"
            )
            return response

        return page


router = APIRouter(route_class=PageRoute, include_in_schema=False)
api = APIRouter(tags=["dashboard"])


def _dashboard(rt: Runtime) -> Dashboard:
    assert rt.dashboard is not None
    return rt.dashboard


def _render(request: Request, template: str, *, status: int = 200, **context: Any) -> HTMLResponse:
    rt: Runtime = request.app.state.runtime
    page = _dashboard(rt).templates.get_template(template)
    return HTMLResponse(page.render(path=request.url.path, **context), status_code=status)


async def _form(request: Request) -> dict[str, str]:
    body = await request.body()
    if len(body) > MAX_FORM:
        raise PayloadTooLarge(f"A dashboard form is at most {MAX_FORM} bytes.")
    return {k: v[0] for k, v in parse_qs(body.decode(errors="replace")).items()}


async def session(request: Request, rt: RuntimeDep) -> Session:
    """A form's session: its sign-out looked up in Redis before the form acts."""
    return await _dashboard(rt).sessions.current(request, utcnow())


async def viewing_session(request: Request, rt: RuntimeDep) -> Session:
    """A page's session. A page changes nothing, so only its cookie's signature is checked
    before it reads and renders; its sign-out is looked up in Redis meanwhile, and PageRoute
    waits for that answer before sending anything: a signed-out cookie still gets only the
    sign-in page, never the page or a refusal."""
    sessions = _dashboard(rt).sessions
    current = sessions.signed(request, utcnow())
    request.state.sign_out = asyncio.ensure_future(sessions.signed_out(current))
    return current


async def _still_signed_in(request: Request) -> None:
    """SignInRequired if the page's session was signed out (`viewing_session`)."""
    lookup: asyncio.Future[bool] | None = getattr(request.state, "sign_out", None)
    if lookup is not None and await lookup:
        raise SignInRequired


SessionDep = Annotated[Session, Depends(session)]
ViewerDep = Annotated[Session, Depends(viewing_session)]
BillingReader = Annotated[Caller, Depends(scoped("billing:read"))]


def _safe_next(target: str) -> str:
    """Only a dashboard path: never another site (`//evil`, `https://…`)."""
    if target.startswith("/dashboard/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/dashboard/"


# ------------------------------------------------------------------ sign in


@router.get("/dashboard")
async def root() -> Response:
    return RedirectResponse("/dashboard/", status_code=308)


def _login(request: Request, rt: Runtime, target: str, *, failed: bool) -> Response:
    csrf, set_cookie = _dashboard(rt).sessions.login_form(utcnow())
    response = _render(
        request,
        "login.html",
        status=401 if failed else 200,
        session=None,
        next=_safe_next(target),
        csrf=csrf,
        failed=failed,
        signed_out="signed_out" in request.query_params,
    )
    set_cookie(response)
    return response


@router.get("/dashboard/login")
async def login_page(request: Request, rt: RuntimeDep, next: str = "/dashboard/") -> Response:
    return _login(request, rt, next, failed=False)


@router.post("/dashboard/login")
async def login(request: Request, rt: RuntimeDep) -> Response:
    board, now = _dashboard(rt), utcnow()
    form = await _form(request)
    board.sessions.check_login_form(request, form.get("csrf", ""), now)
    expected = rt.settings.admin_token.get_secret_value()
    presented = form.get("token", "").strip()
    if not presented or not hmac.compare_digest(presented.encode(), expected.encode()):
        log.warning("Refused a dashboard sign-in: not the admin token")
        return _login(request, rt, form.get("next", ""), failed=True)
    response = RedirectResponse(_safe_next(form.get("next", "")), status_code=303)
    board.sessions.start(response, now)
    log.info("Signed in to the dashboard")
    return response


@router.post("/dashboard/logout")
async def logout(request: Request, rt: RuntimeDep, current: SessionDep) -> Response:
    form = await _form(request)
    board = _dashboard(rt)
    board.sessions.check_csrf(current, form.get("csrf", ""), utcnow())
    response = RedirectResponse("/dashboard/login?signed_out=1", status_code=303)
    await board.sessions.end(current, response)
    return response


# ------------------------------------------------------------------ team


@router.get("/dashboard/")
async def fleet_page(
    request: Request,
    rt: RuntimeDep,
    current: ViewerDep,
    q: str = "",
    plan: str = "",
    state: str = "",
    health: str = "",
    page: int = 1,
) -> Response:
    board = _dashboard(rt)
    query = Query(
        search=q[:200],
        plan=plan,
        state=state,
        health=health if health in HEALTHS else "",
        page=page,
    )
    fleet = await board.fleet.listing()
    found = select(fleet.rows, query, board.settings.page_size, fleet.choices)

    def link(number: int) -> str:
        params = {
            k: v
            for k, v in (
                ("q", query.search),
                ("plan", query.plan),
                ("state", query.state),
                ("health", query.health),
            )
            if v
        }
        params["page"] = str(number)
        return "/dashboard/?" + urlencode(params)

    return _render(
        request,
        "fleet.html",
        session=current,
        query=query,
        found=found,
        healths=HEALTHS,
        link=link,
        now=utcnow(),
    )


async def _page(rt: Runtime, tenant: Tenant, now: dt.datetime, **options: bool) -> views.TenantPage:
    """The tenant's page, its Tenant object and fleet row from the fleet list (fleet.py)."""
    fleet = _dashboard(rt).fleet
    return await views.tenant_page(
        rt,
        tenant,
        now,
        body_of=fleet.body(tenant.namespace, tenant.name),
        row=fleet.row(tenant.namespace, tenant.name),
        **options,
    )


@router.get("/dashboard/tenants/{namespace}/{name}")
async def tenant_page(
    request: Request,
    namespace: Namespace,
    name: Name,
    rt: RuntimeDep,
    current: ViewerDep,
    revoked: str = "",
) -> Response:
    now = utcnow()
    tenant = await existing_tenant(rt.catalog, namespace, name)
    data = await _page(rt, tenant, now)
    return _render(
        request, "tenant.html", session=current, t=data, now=now, revoked=revoked, link=None
    )


@router.post("/dashboard/tenants/{namespace}/{name}/keys/{key_id}/revoke")
async def revoke_key(
    request: Request,
    namespace: Namespace,
    name: Name,
    key_id: int,
    rt: RuntimeDep,
    current: SessionDep,
) -> Response:
    """Revoke for good, as `kubectl patch` of the ApiKey's `spec.revoked` does, and at once
    (keys.py): every replica refuses the key within its key cache's lifetime (a second)."""
    board, now = _dashboard(rt), utcnow()
    board.sessions.check_csrf(current, (await _form(request)).get("csrf", ""), now)
    tenant = await existing_tenant(rt.catalog, namespace, name)
    by = Actor("dashboard", request.client.host if request.client else None)
    row = await keys.revoke(rt, tenant, key_id, by, now)
    log.info(
        "Revoked key %s... of tenant %s/%s from the dashboard (ApiKey %s/%s spec.revoked)",
        row.key_prefix, namespace, name, row.resource_namespace, row.resource_name,
    )  # fmt: skip
    return RedirectResponse(
        f"/dashboard/tenants/{namespace}/{name}?revoked={quote(row.key_prefix)}#keys",
        status_code=303,
    )


@router.post("/dashboard/tenants/{namespace}/{name}/customer-link")
async def make_customer_link(
    request: Request,
    namespace: Namespace,
    name: Name,
    rt: RuntimeDep,
    current: SessionDep,
) -> Response:
    board, now = _dashboard(rt), utcnow()
    form = await _form(request)
    board.sessions.check_csrf(current, form.get("csrf", ""), now)
    tenant = await existing_tenant(rt.catalog, namespace, name)
    try:
        days = int(form.get("days", "7"))
    except ValueError:
        days = 7
    ttl = min(dt.timedelta(days=max(1, days)), dt.timedelta(seconds=board.settings.link_ttl))
    link = customer_link(request, rt, tenant, now + ttl)
    data = await _page(rt, tenant, now)
    return _render(request, "tenant.html", session=current, t=data, now=now, revoked="", link=link)


@router.get("/dashboard/invoices/{invoice_id}")
async def invoice_page(
    request: Request, invoice_id: str, rt: RuntimeDep, current: ViewerDep
) -> Response:
    invoice = await rt.billing.invoice(_invoice_id(invoice_id))
    namespace, _, name = invoice.tenant.partition("/")
    return _render(
        request,
        "invoice_page.html",
        session=current,
        invoice=invoice,
        document=f"/dashboard/invoices/{invoice.id}/document",
        pdf=f"/dashboard/invoices/{invoice.id}/pdf",
        back=f"/dashboard/tenants/{namespace}/{name}" if name else "/dashboard/",
    )


@router.get("/dashboard/invoices/{invoice_id}/document")
async def invoice_document(
    request: Request, invoice_id: str, rt: RuntimeDep, current: ViewerDep
) -> Response:
    return _document(request, await rt.billing.invoice(_invoice_id(invoice_id)))


@router.get("/dashboard/invoices/{invoice_id}/pdf")
async def invoice_pdf(invoice_id: str, rt: RuntimeDep, current: SessionDep) -> Response:
    # Checked first: a PDF costs far more than the lookup it would hide.
    return await _pdf(rt, await rt.billing.invoice(_invoice_id(invoice_id)))


@router.get("/dashboard/revenue")
async def revenue_page(request: Request, rt: RuntimeDep, current: ViewerDep) -> Response:
    data = await views.revenue_page(rt, rt.billing.clock())
    return _render(request, "revenue.html", session=current, r=data)


@router.get("/dashboard/billing")
async def billing_page(request: Request, rt: RuntimeDep, current: ViewerDep) -> Response:
    return _render(request, "billing.html", session=current, b=await views.billing_page(rt))


@router.get("/dashboard/static/{file_name}")
async def static(file_name: str) -> Response:
    content = static_file(file_name)
    if content is None:
        raise NotFound(f"There is no file {file_name}.", code="not_found")
    return Response(
        content, media_type="text/css", headers={"Cache-Control": "public, max-age=300"}
    )


# ------------------------------------------------------------------ customer


def customer_link(request: Request, rt: Runtime, tenant: Tenant, expires: dt.datetime) -> str:
    token = rt.links.sign(CUSTOMER_LINK, f"{tenant.key}/{tenant.uid}", expires)
    return f"{_base(request, rt)}/dashboard/c/{token}"


def _base(request: Request, rt: Runtime) -> str:
    """Where links point: TENANTRY_DASHBOARD_PUBLIC_URL, else where the request came in."""
    return _dashboard(rt).settings.public_url.rstrip("/") or str(request.base_url).rstrip("/")


async def _customer(rt: Runtime, token: str) -> Tenant:
    """The tenant the link names: the same object it was made for, not a successor."""
    subject = rt.links.subject(CUSTOMER_LINK, token, utcnow())
    namespace, name, uid = [*subject.split("/"), "", "", ""][:3]
    tenant = await rt.catalog.tenant(namespace, name)
    if tenant is None or tenant.uid != uid:
        raise Forbidden(
            "This link's tenant no longer exists. Ask for a new link.", code="invalid_link"
        )
    return tenant


def _own_invoice(invoice: Invoice, tenant: Tenant, invoice_id: str) -> Invoice:
    # Another tenant's invoice, or a draft, is as unknown as a missing one.
    if invoice.tenant_uid != tenant.uid or invoice.status == InvoiceStatus.DRAFT:
        raise NotFound(
            f"There is no invoice {invoice_id} for this tenant.", code="invoice_not_found"
        )
    return invoice


@router.get("/dashboard/c/{token}")
async def customer_page(
    request: Request, token: str, rt: RuntimeDep, billing: str = ""
) -> Response:
    now = utcnow()
    tenant = await _customer(rt, token)
    data = await _page(rt, tenant, now, keys=False, drafts=False)
    return _render(
        request,
        "customer.html",
        session=None,
        t=data,
        token=token,
        now=now,
        stripe_on=rt.sessions is not None,
        billing=billing,
    )


@router.get("/dashboard/c/{token}/invoices/{invoice_id}")
async def customer_invoice(
    request: Request, token: str, invoice_id: str, rt: RuntimeDep
) -> Response:
    tenant = await _customer(rt, token)
    invoice = _own_invoice(await rt.billing.invoice(_invoice_id(invoice_id)), tenant, invoice_id)
    base = f"/dashboard/c/{token}"
    return _render(
        request,
        "invoice_page.html",
        session=None,
        invoice=invoice,
        document=f"{base}/invoices/{invoice.id}/document",
        pdf=f"{base}/invoices/{invoice.id}/pdf",
        back=base,
    )


@router.get("/dashboard/c/{token}/invoices/{invoice_id}/document")
async def customer_invoice_document(
    request: Request, token: str, invoice_id: str, rt: RuntimeDep
) -> Response:
    tenant = await _customer(rt, token)
    invoice = _own_invoice(await rt.billing.invoice(_invoice_id(invoice_id)), tenant, invoice_id)
    return _document(request, invoice)


@router.get("/dashboard/c/{token}/invoices/{invoice_id}/pdf")
async def customer_invoice_pdf(token: str, invoice_id: str, rt: RuntimeDep) -> Response:
    tenant = await _customer(rt, token)
    invoice = _own_invoice(await rt.billing.invoice(_invoice_id(invoice_id)), tenant, invoice_id)
    return await _pdf(rt, invoice)


@router.post("/dashboard/c/{token}/billing")
async def customer_billing(request: Request, token: str, rt: RuntimeDep) -> Response:
    """Stripe's own page for this tenant: the portal, or Checkout to add a payment method.
    The link in the path is the credential, so another site cannot post here."""
    tenant = await _customer(rt, token)
    if rt.sessions is None:
        raise NotFound("Online billing is not set up here.", code="stripe_disabled")
    form = await _form(request)
    back = f"{_base(request, rt)}/dashboard/c/{token}"
    customer = await rt.sessions.customer(tenant.namespace, tenant.name)
    if form.get("action") == "checkout":
        made = await rt.sessions.checkout(customer, f"{back}?billing=done", back)
    else:
        made = await rt.sessions.portal(customer, back)
    return RedirectResponse(made.url, status_code=303)


# ------------------------------------------------------------------ shared


def _invoice_id(raw: str) -> str:
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise NotFound(f"There is no invoice {raw!r}.", code="invoice_not_found") from None


def _document(request: Request, invoice: Invoice) -> Response:
    """The invoice as the PDF prints it, its stylesheet linked rather than inlined."""
    return _render(
        request,
        "invoice_document.html",
        invoice=invoice,
        draft=invoice.number is None or invoice.status == InvoiceStatus.DRAFT,
    )


async def _pdf(rt: Runtime, invoice: Invoice) -> Response:
    """The PDF service the API's invoice routes use, with their refusals."""
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
        headers={"Content-Disposition": f'attachment; filename="{name}.pdf"'},
    )


# ------------------------------------------------------------------ JSON


class CustomerLink(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    url: str = Field(description="The customer's dashboard; whoever holds it sees this tenant.")
    expires_at: dt.datetime


def _link_out(request: Request, rt: Runtime, tenant: Tenant) -> CustomerLink:
    expires = utcnow() + dt.timedelta(seconds=_dashboard(rt).settings.link_ttl)
    return CustomerLink(url=customer_link(request, rt, tenant, expires), expires_at=expires)


@api.post(
    "/v1/dashboard-link",
    summary="A signed, expiring link to the calling instance's tenant's dashboard",
    response_model_by_alias=True,
    responses=responses(Unauthorized, Forbidden, Unavailable),
)
async def instance_link(request: Request, rt: RuntimeDep, caller: BillingReader) -> CustomerLink:
    """For the instance's signed-in user: usage against limits, invoices with their PDFs,
    plan and license. Needs the `billing:read` scope; lasts `TENANTRY_DASHBOARD_LINK_TTL`."""
    return _link_out(request, rt, caller.tenant)


@api.post(
    "/v1/admin/tenants/{namespace}/{name}/dashboard-link",
    summary="A signed, expiring link to a tenant's customer dashboard",
    dependencies=[Depends(admin_token)],
    response_model_by_alias=True,
    responses=responses(Unauthorized, NotFound, Unavailable),
)
async def admin_link(
    request: Request, namespace: Namespace, name: Name, rt: RuntimeDep
) -> CustomerLink:
    return _link_out(request, rt, await existing_tenant(rt.catalog, namespace, name))
