"""Tenant -> Stripe Customer: who Stripe collects from.

The Customer carries what invoices are addressed to (the legal name, the
billing email, the address and the tax id) and, in its metadata, the
Tenant it belongs to. It is made on the Tenant's first pass, updated when
the Tenant changes, and kept or deleted with the Tenant as
`TENANTRY_OPERATOR_STRIPE_CUSTOMER_ON_DELETE` says. A tax id goes to Stripe
with the type its country implies (`eu_vat` in the EU); a country Stripe has
no unambiguous type for keeps it in Tenantry alone, and the condition says so.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import kopf

from tenantry.core.resources import GROUP, VERSION, TenantKind, TenantSpec
from tenantry.operator import sharding
from tenantry.operator.errors import StripeRefused, StripeUnavailable
from tenantry.operator.reconcile import Logger, Reconcile
from tenantry.operator.stripe.client import Stripe, idempotency_key, missing
from tenantry.operator.stripe.sync import in_step, synced, syncing

if TYPE_CHECKING:
    from stripe import Customer
    from stripe.params import CustomerCreateParams, CustomerUpdateParams

KIND = "Tenant"

_EU = "AT BE BG CY CZ DE DK EE ES FI FR GR HR HU IE IT LT LU LV MT NL PL PT RO SE SI SK"
TAX_ID_TYPES: dict[str, str] = {
    **dict.fromkeys(_EU.split(), "eu_vat"),
    "AE": "ae_trn",
    "AR": "ar_cuit",
    "AU": "au_abn",
    "BR": "br_cnpj",
    "CA": "ca_bn",
    "CH": "ch_vat",
    "CL": "cl_tin",
    "GB": "gb_vat",
    "HK": "hk_br",
    "IL": "il_vat",
    "IN": "in_gst",
    "IS": "is_vat",
    "KR": "kr_brn",
    "LI": "li_uid",
    "MX": "mx_rfc",
    "NO": "no_vat",
    "NZ": "nz_gst",
    "SA": "sa_vat",
    "TH": "th_vat",
    "TR": "tr_tin",
    "TW": "tw_vat",
    "UA": "ua_vat",
    "US": "us_ein",
    "ZA": "za_vat",
}
"""Stripe's tax id type for a business's tax id in each country where one type is
the obvious one (https://docs.stripe.com/api/tax_ids/object#tax_id_object-type)."""


def tax_id_of(spec: TenantSpec) -> tuple[str, str] | None:
    """`(type, value)` of the Tenant's tax id as Stripe takes it, when it can."""
    country = spec.billing.address.country
    kind = TAX_ID_TYPES.get(country or "")
    if not spec.billing.tax_id or kind is None:
        return None
    return kind, spec.billing.tax_id


def tax_id_note(spec: TenantSpec) -> str:
    if not spec.billing.tax_id or tax_id_of(spec) is not None:
        return ""
    country = spec.billing.address.country
    where = f"country {country}" if country else "a Tenant without billing.address.country"
    return f" Its tax id is not sent to Stripe: Stripe knows no tax id type for {where}."


def metadata(uid: str, namespace: str, name: str) -> dict[str, str]:
    return {"tenantry_tenant_uid": uid, "tenantry_tenant": f"{namespace}/{name}"}


def _address(spec: TenantSpec) -> dict[str, str]:
    address = spec.billing.address
    return {
        "line1": address.line1,
        "line2": address.line2,
        "postal_code": address.postal_code,
        "city": address.city,
        "state": address.state,
        "country": address.country or "",
    }


def create_params(uid: str, namespace: str, name: str, spec: TenantSpec) -> CustomerCreateParams:
    params: dict[str, Any] = {
        "name": spec.billing.legal_name or spec.display_name,
        "email": spec.billing_email,
        "description": spec.display_name,
        "metadata": metadata(uid, namespace, name),
    }
    address = {key: value for key, value in _address(spec).items() if value}
    if address:
        params["address"] = address
    tax_id = tax_id_of(spec)
    if tax_id is not None:
        params["tax_id_data"] = [{"type": tax_id[0], "value": tax_id[1]}]
    return cast("CustomerCreateParams", params)


def update_params(uid: str, namespace: str, name: str, spec: TenantSpec) -> CustomerUpdateParams:
    """Every field the Customer takes from the Tenant; an empty one clears Stripe's."""
    address = _address(spec)
    params: dict[str, Any] = {
        "name": spec.billing.legal_name or spec.display_name,
        "email": spec.billing_email,
        "description": spec.display_name,
        "metadata": metadata(uid, namespace, name),
        "address": address if any(address.values()) else "",
    }
    return cast("CustomerUpdateParams", params)


def in_step_message(customer_id: str, spec: TenantSpec) -> str:
    return f"Stripe Customer {customer_id}.{tax_id_note(spec)}"


async def keep_in_step(
    api: Stripe, r: Reconcile, spec: TenantSpec, customer_id: str | None, logger: Logger
) -> StripeUnavailable | None:
    """Make or update the Tenant's Customer unless it is in step; its id into status."""
    if customer_id is not None and in_step(r, in_step_message(customer_id, spec)):
        return None
    async with syncing(r, logger) as step:
        customer_id = customer_id or await _adopt(api, r, spec)
        if customer_id is None:
            customer_id = await _create(api, r, spec, logger)
        else:
            await _update(api, r, spec, customer_id)
        r.set(stripeCustomerId=customer_id)
        synced(r, in_step_message(customer_id, spec))
    return step.retry


def _identity(r: Reconcile) -> tuple[str, str, str]:
    meta = r.body.metadata
    return meta.uid or "", meta.namespace or "", meta.name or ""


async def _adopt(api: Stripe, r: Reconcile, spec: TenantSpec) -> str | None:
    """The Customer an earlier pass made for this Tenant whose id never reached its status
    (beyond the 24 hours Stripe keeps an idempotency key)."""
    uid, namespace, name = _identity(r)
    async with api.calling(f"look up the Customer of Tenant {namespace}/{name}"):
        found = await api.client.v1.customers.list_async(
            {"email": spec.billing_email, "limit": 100}
        )
    for customer in found.data:
        if _tenant_uid(customer) == uid:
            return customer.id
    return None


def _tenant_uid(customer: Customer) -> str | None:
    meta = customer.metadata.to_dict() if customer.metadata is not None else {}
    value = meta.get("tenantry_tenant_uid")
    return value if isinstance(value, str) else None


async def _create(api: Stripe, r: Reconcile, spec: TenantSpec, logger: Logger) -> str:
    uid, namespace, name = _identity(r)
    params = create_params(uid, namespace, name, spec)
    key = idempotency_key(KIND, uid, r.generation, "create-customer", params)
    async with api.calling(f"create the Customer of Tenant {namespace}/{name}"):
        customer = await api.client.v1.customers.create_async(params, api.options(key))
    message = f"Created Stripe Customer {customer.id} for Tenant {namespace}/{name}"
    logger.info(message)
    kopf.info(r.body, reason="StripeCustomerCreated", message=message)
    return customer.id


async def _update(api: Stripe, r: Reconcile, spec: TenantSpec, customer_id: str) -> None:
    """The Customer's fields and its one tax id as the Tenant says."""
    uid, namespace, name = _identity(r)
    params = update_params(uid, namespace, name, spec)
    key = idempotency_key(KIND, uid, r.generation, "update-customer", params)
    async with api.calling(f"update Stripe Customer {customer_id}"):
        await api.client.v1.customers.update_async(customer_id, params, api.options(key))
    wanted = tax_id_of(spec)
    tax_ids = api.client.v1.customers.tax_ids
    async with api.calling(f"list the tax ids of Stripe Customer {customer_id}"):
        existing = await tax_ids.list_async(customer_id, {"limit": 100})
    kept = False
    for tax_id in existing.data:
        if wanted is not None and (tax_id.type, tax_id.value) == wanted and not kept:
            kept = True
            continue
        async with api.calling(f"delete tax id {tax_id.id} of Stripe Customer {customer_id}"):
            await tax_ids.delete_async(customer_id, tax_id.id)
    if wanted is not None and not kept:
        data = {"type": wanted[0], "value": wanted[1]}
        key = idempotency_key(KIND, uid, r.generation, "create-tax-id", data)
        async with api.calling(f"add the tax id to Stripe Customer {customer_id}"):
            await tax_ids.create_async(customer_id, cast(Any, data), api.options(key))


async def finalize(api: Stripe, body: kopf.Body, logger: Logger) -> None:
    """A deleted Tenant's Customer: kept (its invoices and payments stay), or deleted."""
    customer_id = body.status.get("stripeCustomerId")
    if api.customer_on_delete != "delete" or not customer_id:
        return
    try:
        async with api.calling(f"delete Stripe Customer {customer_id}"):
            await api.client.v1.customers.delete_async(customer_id)
    except StripeRefused as refused:
        if not missing(refused):
            # Refused for good: the Tenant goes all the same, and people are told.
            logger.warning(refused.message)
            kopf.warn(body, reason=refused.reason, message=refused.message)
            return
    message = (
        f"Deleted Stripe Customer {customer_id} of Tenant "
        f"{body.metadata.namespace}/{body.metadata.name}"
    )
    logger.info(message)
    kopf.info(body, reason="StripeCustomerDeleted", message=message)


def register(registry: kopf.OperatorRegistry) -> None:
    """The index Subscriptions find their Tenant's Customer in."""

    @kopf.index(GROUP, VERSION, TenantKind.plural, id="stripe_customers_by_tenant",
                when=sharding.tenants, registry=registry)  # fmt: skip
    async def stripe_customers_by_tenant(
        namespace: str | None, name: str, body: kopf.Body, **_: Any
    ) -> dict[tuple[str | None, str], str]:
        customer = body.status.get("stripeCustomerId")
        return {(namespace, name): customer} if customer else {}
