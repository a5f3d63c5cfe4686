"""Signup: a Tenant and its trialing Subscription, made as resources, and a checkout link.

The resources are made in the configured namespace, labelled
`tenantry.io/signup`, exactly as a platform engineer would apply them: the
operator provisions them like any other, GitOps tools see them, and deleting
them undoes a signup. Nothing is stored elsewhere.

Abuse: each client address may sign up `rate_limit` times per window (a Redis
counter per address and window). A Subscription that cannot be made takes its
Tenant back with it, so a failed signup leaves nothing and can be retried.

With Stripe on, the answer carries a signed link to
`GET /v1/signup/checkout`: it opens Stripe Checkout on the Tenant's Customer
as soon as the operator has made it (seconds), so the link can be given out at
once.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from tenantry.api.errors import Conflict, NotFound, TooManyRequests, Unavailable, Unprocessable
from tenantry.api.links import Links
from tenantry.api.signup.settings import SignupSettings
from tenantry.api.tenants.kube import Kube, SubscriptionResource, TenantResource
from tenantry.core import names
from tenantry.core.resources import API_VERSION, BillingDetails, SubscriptionKind, TenantKind

log = logging.getLogger("tenantry.api.signup")

CHECKOUT_LINK = "signup-checkout"
"""The purpose of the signed link a signup answers with."""


@dataclass(frozen=True)
class Form:
    name: str
    display_name: str
    email: str
    plan: str | None
    billing: BillingDetails


@dataclass(frozen=True)
class SignedUp:
    namespace: str
    name: str
    plan: str
    trial_days: int


def tenant_manifest(namespace: str, form: Form) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": TenantKind.kind,
        "metadata": {"name": form.name, "namespace": namespace, "labels": names.SIGNUP_LABEL},
        "spec": {
            "displayName": form.display_name,
            "billingEmail": form.email,
            "billing": form.billing.to_wire(),
        },
    }


def subscription_manifest(
    namespace: str, name: str, tenant_uid: str, plan: str, trial_days: int | None
) -> dict[str, Any]:
    spec: dict[str, Any] = {"tenantRef": {"name": name}, "planRef": {"name": plan}}
    owner = {"apiVersion": API_VERSION, "kind": TenantKind.kind, "name": name, "uid": tenant_uid}
    if trial_days is not None:
        spec["trialDays"] = trial_days
    return {
        "apiVersion": API_VERSION,
        "kind": SubscriptionKind.kind,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": names.SIGNUP_LABEL,
            # Deleting the Tenant takes its Subscription with it.
            "ownerReferences": [owner],
        },
        "spec": spec,
    }


class Signup:
    def __init__(
        self, settings: SignupSettings, kube: Kube, redis: Redis, links: Links, fail_open: bool
    ) -> None:
        self.settings = settings
        self.kube = kube
        self.redis = redis
        self.links = links
        self.fail_open = fail_open

    async def admit(self, address: str, now: dt.datetime) -> None:
        """Count one signup attempt from `address`; 429 past the limit of its window."""
        window = self.settings.rate_window
        start = int(now.timestamp()) // window
        key = f"tenantry:signup:{self.settings.namespace}:{address}:{start}"
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.incr(key)
                pipe.expire(key, window + 60)
                count, _ = await pipe.execute()
        except (RedisError, OSError) as error:
            if self.fail_open:
                log.warning("Signup rate limit not counted (Redis: %s); admitted", error)
                return
            raise Unavailable(
                "Signup is unavailable for a moment (its rate limit cannot be counted); "
                "retry shortly.",
                code="signup_unavailable",
                headers={"Retry-After": "5"},
            ) from error
        if int(count) > self.settings.rate_limit:
            retry = (start + 1) * window - int(now.timestamp())
            raise TooManyRequests(
                f"Too many signups from this address: at most {self.settings.rate_limit} per "
                f"{window} s. Retry in {retry} s.",
                code="signup_rate_limited",
                headers={"Retry-After": str(retry)},
                details={"retry_after_seconds": retry},
            )

    async def sign_up(self, form: Form) -> SignedUp:
        namespace = self.settings.namespace
        assert namespace is not None
        offered = self.settings.offered
        plan_name = form.plan or offered[0]
        if plan_name not in offered:
            raise Unprocessable(
                f"Plan {plan_name!r} is not offered at signup; choose one of {', '.join(offered)}.",
                code="plan_not_offered",
                details={"offered": offered},
            )
        plan = await self.kube.plan(plan_name)
        if plan is None:
            log.error("Signup offers Plan %s, which does not exist (TENANTRY_SIGNUP_PLANS)",
                      plan_name)  # fmt: skip
            raise Unavailable(
                f"Plan {plan_name!r} is not available right now; retry later or choose another.",
                code="plan_unavailable",
            )
        tenant = await self.kube.create(TenantResource, tenant_manifest(namespace, form))
        if tenant is None:
            raise _taken(form.name)
        uid = tenant["metadata"]["uid"]
        trial = self.settings.trial_days
        manifest = subscription_manifest(namespace, form.name, uid, plan_name, trial)
        try:
            made = await self.kube.create(SubscriptionResource, manifest)
        except Exception:
            await self._take_back(namespace, form.name)
            raise
        if made is None:
            await self._take_back(namespace, form.name)
            raise _taken(form.name)
        log.info("Signup made Tenant %s/%s on Plan %s", namespace, form.name, plan_name)
        days = trial if trial is not None else int((plan.get("spec") or {}).get("trialDays", 0))
        return SignedUp(namespace, form.name, plan_name, days)

    async def _take_back(self, namespace: str, name: str) -> None:
        try:
            await self.kube.delete_tenant(namespace, name)
        except Unavailable:
            log.error("Signup left Tenant %s/%s without a Subscription: delete it", namespace, name)

    def checkout_token(self, signed_up: SignedUp, now: dt.datetime) -> str:
        expires = now + dt.timedelta(seconds=self.settings.link_ttl)
        return self.links.sign(CHECKOUT_LINK, f"{signed_up.namespace}/{signed_up.name}", expires)

    def checkout_tenant(self, token: str, now: dt.datetime) -> tuple[str, str]:
        namespace, _, name = self.links.subject(CHECKOUT_LINK, token, now).partition("/")
        return namespace, name


def _taken(name: str) -> Conflict:
    return Conflict(
        f"The name {name!r} is taken: choose another.",
        code="name_taken",
        details={"name": name},
    )


def signup_off() -> NotFound:
    return NotFound(
        "Signup is off here (TENANTRY_SIGNUP_NAMESPACE is not set).", code="signup_disabled"
    )
