"""Handlers of the Tenant kind, and the nudges from the kinds it depends on.

Each handler reads the object, asks `provisioning` what should exist,
applies it through the adapters and writes one status patch, only when the
status differs. A Tenant is reconciled on every change, when its
Subscription or Plan changes (a nudge), and on a timer that repairs drift.

The timer's pass is the same reconcile at low priority (`work.periodic`):
it reads the namespace, the license Secret and the release's own records
from the API server, and runs helm only when something differs. Once a
Tenant's deletion has begun it is never reconciled again: its timer stops
(cancelling a helm process it runs), and its uid joins `Context.deleting`,
which every pass checks before it acts and again when its helm slot comes.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import random
from collections.abc import Iterable, Mapping
from typing import Any

import kopf
from pydantic import ValidationError

from tenantry.core.conditions import READY, Observed, condition, find
from tenantry.core.names import REVOKE_LICENSE_ANNOTATION
from tenantry.core.periods import BillingCycle
from tenantry.core.resources import (
    GROUP,
    VERSION,
    BillingCycleSummary,
    LicenseSummary,
    PlanKind,
    PlanSpec,
    ResourceRef,
    SubscriptionKind,
    SubscriptionSpec,
    SubscriptionState,
    TenantKind,
    TenantSpec,
    TenantStatus,
)
from tenantry.db import apikeys as apikeys_repository
from tenantry.db import audit
from tenantry.db import subscriptions as subscriptions_repository
from tenantry.db.licenses import LicenseAction
from tenantry.operator import (
    errors,
    history,
    licensing,
    metrics,
    outbound,
    rollout,
    sharding,
    work,
)
from tenantry.operator.charts_source import ChartUnavailable, chart_ref
from tenantry.operator.context import Context
from tenantry.operator.errors import InvalidSpec, NotReady, spec_error
from tenantry.operator.keys import Revocation
from tenantry.operator.provisioning import (
    Desired,
    IssuedLicense,
    SubscriptionView,
    desired_state,
    license_due,
    plan_of,
    select_subscription,
    tenant_namespace,
)
from tenantry.operator.reconcile import Logger, Reconcile, prior_status, reconciling, utcnow
from tenantry.operator.stripe import customers as stripe_customers

NAMESPACE_READY = "NamespaceReady"
LICENSE_ISSUED = "LicenseIssued"
RELEASE_DEPLOYED = "ReleaseDeployed"
PAYMENT_CURRENT = "PaymentCurrent"
HISTORY_ACTIONS: dict[str, LicenseAction] = {
    "Issued": "issued",
    "Renewed": "renewed",
    "Reissued": "reissued",
}


def tenant_reads(subscription: kopf.Body) -> tuple[Any, ...]:
    """What `subscription_views` reads of a Subscription: its spec (by generation) and
    these fields of its status. A change of anything else needs no pass of its Tenant."""
    status = subscription.status
    period = status.get("currentPeriod") or {}
    fields = ("state", "plan", "trialEnd", "billingCycle")
    return (
        subscription.metadata.get("generation"),
        *(status.get(field) for field in fields),
        period.get("end"),
    )


def subscription_views(raw: Iterable[Mapping[str, Any]]) -> list[SubscriptionView]:
    views = []
    for item in raw:
        status = item.get("status") or {}
        try:
            spec = SubscriptionSpec.model_validate(item["spec"])
            state = SubscriptionState(status["state"]) if status.get("state") else None
        except (ValidationError, ValueError) as error:
            raise InvalidSpec(
                f"Subscription {item['name']} is invalid: {error}", reason="InvalidSubscription"
            ) from error
        in_force = status.get("plan")
        if in_force and in_force != spec.plan_ref.name:
            # A plan change billing refused (another currency) leaves the old plan in force.
            spec = spec.model_copy(update={"plan_ref": ResourceRef(name=in_force)})
        period = status.get("currentPeriod") or {}
        cycle = None
        if status.get("billingCycle"):
            try:
                summary = BillingCycleSummary.model_validate(status["billingCycle"])
                cycle = BillingCycle(
                    summary.start, summary.interval, summary.anchor_day, summary.trial_start
                )
            except ValidationError:
                cycle = None  # recomputed below from the spec
        views.append(
            SubscriptionView(
                name=item["name"],
                spec=spec,
                state=state,
                trial_end=_parse_time(status.get("trialEnd")),
                period_end=_parse_time(period.get("end")),
                created=_parse_time(item.get("created")),
                cycle=cycle,
            )
        )
    return views


def plan_specs(raw: Mapping[str, Iterable[Mapping[str, Any]]]) -> dict[str, PlanSpec]:
    plans = {}
    for name, specs in raw.items():
        for spec in specs:
            try:
                plans[name] = PlanSpec.model_validate(spec)
            except ValidationError as error:
                raise InvalidSpec(
                    f"Plan {name} is invalid ({spec_error(error)}); fix the Plan.",
                    reason="InvalidPlan",
                ) from error
    return plans


def _parse_time(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if value else None


def payment_condition(state: SubscriptionState) -> Observed:
    if state in (SubscriptionState.PAST_DUE, SubscriptionState.UNPAID):
        return condition(PAYMENT_CURRENT, False, "PaymentFailed", f"Subscription is {state.value}.")
    if state == SubscriptionState.CANCELED:
        return condition(PAYMENT_CURRENT, False, "Canceled", "Subscription is canceled.")
    if state == SubscriptionState.TRIALING:
        return condition(PAYMENT_CURRENT, True, "Trialing", "In trial; no payment due yet.")
    return condition(PAYMENT_CURRENT, True, "Paid", f"Subscription is {state.value}.")


class Deleting(Exception):
    """The Tenant was marked for deletion during the pass: it stops where it is."""


async def reconcile(
    ctx: Context,
    body: kopf.Body,
    subscriptions: Iterable[Mapping[str, Any]],
    plans: Mapping[str, Iterable[Mapping[str, Any]]],
    rollouts: Mapping[str, Iterable[Mapping[str, Any]]],
    logger: Logger,
) -> tuple[dict[str, Any], Reconcile]:
    """Bring one Tenant's namespace, license and release in line; its new status, and
    the pass (what it changed, what went wrong). `rollouts`: each Plan's `status.rollout`."""
    prior = prior_status(body, TenantStatus)
    async with reconciling(body, prior.conditions, logger, now=ctx.clock()) as r:
        await provision(ctx, r, prior, subscriptions, plans, rollouts, logger)
    return r.status(), r


async def provision(
    ctx: Context,
    r: Reconcile,
    prior: TenantStatus,
    subscriptions: Iterable[Mapping[str, Any]],
    plans: Mapping[str, Iterable[Mapping[str, Any]]],
    rollouts: Mapping[str, Iterable[Mapping[str, Any]]],
    logger: Logger,
) -> None:
    body, settings = r.body, ctx.settings
    name, namespace = body.metadata.name, body.metadata.namespace
    assert name
    assert namespace
    spec = r.spec(TenantSpec)
    if ctx.stripe is not None:
        # First, so a Tenant that cannot be provisioned yet still gets its Customer; a
        # Stripe problem shows in StripeSynced and the timer retries it.
        await stripe_customers.keep_in_step(ctx.stripe, r, spec, prior.stripe_customer_id, logger)
    views = subscription_views(subscriptions)
    ended = None if views else await ended_subscription(ctx, body.metadata.uid or "")
    subscription = select_subscription(name, namespace, [ended[0]] if ended else views)
    # Only this Tenant's Plan is read: another Plan's trouble is not its own.
    plan_name = subscription.spec.plan_ref.name
    known = plan_specs({plan_name: plans.get(plan_name, ())})
    if ended and plan_name not in known:
        known[plan_name] = ended[1]
    plan_name, plan = plan_of(subscription, known)
    version = rollout.tenant_version(
        plan_name, plan, spec, body.metadata.annotations, prior, rollouts.get(plan_name, ())
    )
    chart = await ctx.charts.resolve(chart_ref(plan_name, plan.chart, version, settings.chart_path))
    desired = desired_state(
        tenant_id=body.metadata.uid or name,
        tenant_name=name,
        tenant_namespace_prefix=settings.namespace_prefix,
        spec=spec,
        subscription=subscription,
        plans=known,
        chart=chart,
        license_secret=settings.license_secret,
        api_url=settings.api_url,
        key_secret=settings.instance_key_secret,
        now=r.now,
    )
    r.set(
        plan=desired.plan_name,
        namespace=desired.namespace,
        billingCycle=BillingCycleSummary(
            start=desired.cycle.start,
            interval=desired.cycle.interval,
            anchor_day=desired.cycle.anchor_day,
            trial_start=desired.cycle.trial_start,
        ).to_wire(),
    )
    r.observe(payment_condition(desired.state))

    if await ctx.cluster.ensure_namespace(desired.namespace, namespace, name):
        r.changed.append("namespace")
    if prior.namespace != desired.namespace:
        kopf.info(body, reason="NamespaceReady", message=f"Namespace {desired.namespace} is ready")
    r.observe(condition(NAMESPACE_READY, True, "Created", f"Namespace {desired.namespace}."))

    license_status, license_condition = await ensure_license(ctx, body, desired, r.now, logger)
    r.set(license=license_status)
    r.observe(license_condition)
    if license_status != (prior.license.to_wire() if prior.license else None):
        r.changed.append("license")

    if (body.metadata.uid or "") in ctx.deleting:
        raise Deleting()
    release, deployed_now = await ctx.releases.ensure(
        settings.release_name, desired.namespace, chart, desired.values, logger
    )
    if deployed_now:
        r.changed.append("release")
    prior_release = find(prior.conditions, RELEASE_DEPLOYED)
    if desired.suspended or (prior_release is not None and prior_release.reason == "Suspended"):
        # For charts that ignore `tenantry.suspended` (operator/suspension.py).
        for scaled in await ctx.workloads.scale(desired.namespace, desired.suspended):
            r.changed.append(f"{scaled.kind} {scaled.name}")
            message = f"Scaled {scaled.kind} {desired.namespace}/{scaled.name} to {scaled.replicas}"
            logger.info(message)
            kopf.info(body, reason="Suspended" if desired.suspended else "Resumed", message=message)
    r.set(release=release.to_wire())
    if deployed_now and (prior.release is None or prior.release.revision != release.revision):
        message = (
            f"Deployed release {desired.namespace}/{release.name} revision {release.revision}"
            f"{' (suspended)' if desired.suspended else ''}"
        )
        logger.info(message)
        kopf.info(body, reason="ReleaseDeployed", message=message)
    deployed = release.status == "deployed"
    r.observe(
        condition(
            RELEASE_DEPLOYED,
            deployed,
            "Suspended" if desired.suspended else ("Deployed" if deployed else "NotDeployed"),
            f"Release {release.name} revision {release.revision} is {release.status}"
            f"{', scaled to zero' if desired.suspended else ''}.",
        )
    )
    ready = condition(
        READY,
        deployed,
        "Suspended" if desired.suspended else "Provisioned",
        "Instance is suspended." if desired.suspended else "Instance is provisioned.",
    )
    r.observe(ready)
    await outbound.tenant_changed(ctx, body, find(prior.conditions, READY), ready,
                                  plan=desired.plan_name, namespace=desired.namespace,
                                  state=desired.state)  # fmt: skip


async def ended_subscription(
    ctx: Context, tenant_uid: str
) -> tuple[SubscriptionView, PlanSpec] | None:
    """The Tenant's deleted Subscription, as billing keeps it: the Tenant stays
    suspended and unlicensed until a new Subscription names it."""
    if ctx.database is None or not tenant_uid:
        return None
    async with errors.database(), ctx.database.connect() as conn:
        terms = await subscriptions_repository.terms_of_tenant(conn, tenant_uid)
    if terms is None or terms.ended_at is None:
        return None
    view = SubscriptionView(
        name=terms.name,
        spec=SubscriptionSpec.model_validate(
            {"tenantRef": {"name": terms.tenant_name}, "planRef": {"name": terms.plan_name}}
        ),
        state=SubscriptionState.CANCELED,
        created=terms.started_at,
        cycle=terms.cycle,
    )
    return view, terms.plan


async def ensure_license(
    ctx: Context,
    body: kopf.Body,
    desired: Desired,
    now: dt.datetime,
    logger: Logger,
) -> tuple[dict[str, Any] | None, Observed]:
    """Issue, renew, re-issue or revoke the Tenant's license; its status entry and condition."""
    settings = ctx.settings
    namespace, secret = desired.namespace, settings.license_secret
    tenant_ref = f"{body.metadata.namespace}/{body.metadata.name}"
    existing = await ctx.cluster.read_license(namespace, secret)

    async def revoke(license_: IssuedLicense, reason: str) -> None:
        await history.record(ctx, body, "revoked", license_, None)
        await ctx.revocations.revoke(
            Revocation(license_.license_id, license_.expires_at, tenant_ref, reason), ctx.keys, now
        )
        message = f"Revoked license {license_.license_id} ({reason})"
        logger.info(message)
        kopf.info(body, reason="LicenseRevoked", message=message)

    if desired.terms.subscription_status == SubscriptionState.CANCELED:
        if existing is not None:
            await revoke(existing, "SubscriptionCanceled")
            await ctx.cluster.clear_license(namespace, secret, existing.license_id)
        return None, condition(
            LICENSE_ISSUED,
            False,
            "Revoked",
            "The subscription is canceled; its license is revoked.",
        )

    due = license_due(existing, desired.terms, now, settings.license_renew_before)
    leaked = body.metadata.annotations.get(REVOKE_LICENSE_ANNOTATION)
    if existing is not None and leaked == existing.license_id:
        await revoke(existing, "RevokedOnRequest")
        await history.audited(
            ctx, audit.kubernetes(body.metadata.get("managedFields"), REVOKE_LICENSE_ANNOTATION),
            "license.revoked", tenant_ref, {"license": existing.license_id},
        )  # fmt: skip
        due = "Reissued"
    if due:
        ring = await ctx.keys.current()
        token, issued = licensing.sign(
            ring,
            desired.terms,
            now=now,
            ttl=settings.license_ttl,
            issuer=settings.license_issuer,
            audience=settings.license_audience,
        )
        # The Secret first: a license is recorded once it exists. An operator killed in
        # between leaves it to the next, which finds it in the Secret (`confirm`) and
        # does not sign another.
        await ctx.cluster.write_license(
            namespace, secret, token, ring.public_keys().to_jwks(), issued, body.metadata.name or ""
        )
        await history.record(ctx, body, HISTORY_ACTIONS[due], issued, desired.terms)
        message = (
            f"{due} license {issued.license_id} for plan {issued.plan} in Secret "
            f"{namespace}/{secret}, expiring {issued.expires_at:%Y-%m-%d}"
        )
        logger.info(message)
        kopf.info(body, reason=f"License{due}", message=message)
        existing = issued
    assert existing is not None
    if not due:
        await history.confirm(ctx, body, existing, desired.terms)
    summary = LicenseSummary(
        id=existing.license_id,
        plan=existing.plan,
        issued_at=existing.issued_at,
        expires_at=existing.expires_at,
        secret_name=secret,
    ).to_wire()
    return summary, condition(
        LICENSE_ISSUED, True, "Signed", f"License {existing.license_id} is in force."
    )


NAMESPACE_WAIT_MAX = 30.0
"""Longest wait, in seconds, between checks of a namespace being deleted."""


def namespace_wait(retry: int) -> float:
    """Seconds until the next check of a namespace being deleted: 2, 4, 8... up to 30."""
    return min(2.0 ** (retry + 1), NAMESPACE_WAIT_MAX)


async def finalize(ctx: Context, body: kopf.Body, logger: Any, retry: int = 0) -> None:
    """Uninstall the release and delete the namespace; done when the namespace is gone."""
    name, namespace = body.metadata.name, body.metadata.namespace
    assert name
    assert namespace
    await revoke_api_keys(ctx, body, logger)
    # The namespace status recorded wins: the spec may have changed since.
    target: str | None = body.status.get("namespace")
    if not target:
        try:
            spec = TenantSpec.model_validate(dict(body.spec))
        except ValidationError:
            return  # never valid, so never provisioned
        target = tenant_namespace(name, spec, ctx.settings.namespace_prefix)
    state = await ctx.cluster.namespace_state(target)
    phase, ours = (state[0], state[1] == (namespace, name)) if state else (None, False)
    release = ctx.settings.release_name
    # Deleting the Tenant's own namespace removes a release confined to it, helm's
    # records included; helm uninstalls one with objects elsewhere or delete hooks.
    if phase == "Active" and await ctx.releases.uninstall(release, target, namespace_going=ours):
        logger.info(f"Uninstalled release {target}/{release}")
        kopf.info(
            body, reason="ReleaseUninstalled", message=f"Uninstalled release {target}/{release}"
        )
    if phase is not None and await ctx.cluster.delete_namespace(target, namespace, name):
        # Held until the namespace is gone, so a Tenant re-created under the
        # same name never meets the old one's leftovers; checked less often the
        # longer it takes (a thousand namespaces go at the controller's pace).
        delay = namespace_wait(retry)
        raise kopf.TemporaryError(
            f"Waiting for namespace {target} to be deleted; next check in {delay:g} s",
            delay=delay,
        )
    ctx.cluster.forget_records(target)
    if ctx.stripe is not None:
        await stripe_customers.finalize(ctx.stripe, body, logger)


async def revoke_api_keys(ctx: Context, body: kopf.Body, logger: Any) -> None:
    """A deleted Tenant's keys die with it, so a Tenant re-created under the same
    name never inherits them."""
    if ctx.database is None:
        return
    async with errors.database(), ctx.database.begin() as conn:
        revoked = await apikeys_repository.revoke_tenant_keys(
            conn,
            body.metadata.namespace or "",
            body.metadata.name or "",
            body.metadata.uid or "",
            utcnow(),
        )
    if revoked:
        logger.info(f"Revoked {revoked} API key(s) of the deleted Tenant")
        kopf.info(body, reason="ApiKeysRevoked", message=f"Revoked {revoked} API key(s)")


def register(registry: kopf.OperatorRegistry, ctx_of: Any, drift_interval: float) -> None:
    """Register the Tenant handlers. `ctx_of(memo)` returns the operator's Context."""
    tenants = (GROUP, VERSION, TenantKind.plural)

    @kopf.index(GROUP, VERSION, SubscriptionKind.plural, id="subscriptions_by_tenant",
                when=sharding.tenant_parts, registry=registry)  # fmt: skip
    async def subscriptions_by_tenant(
        namespace: str | None, name: str, body: kopf.Body, **_: Any
    ) -> dict[tuple[str | None, str], dict[str, Any]]:
        tenant = (body.spec.get("tenantRef") or {}).get("name", "")
        return {
            (namespace, tenant): {
                "name": name,
                "spec": copy.deepcopy(dict(body.spec)),
                "status": copy.deepcopy(dict(body.status)),
                "created": body.metadata.get("creationTimestamp"),
            }
        }

    @kopf.index(GROUP, VERSION, PlanKind.plural, id="plans_by_name", registry=registry)
    async def plans_by_name(name: str, body: kopf.Body, **_: Any) -> dict[str, dict[str, Any]]:
        return {name: copy.deepcopy(dict(body.spec))}

    async def run(
        body: kopf.Body,
        memo: kopf.Memo,
        patch: kopf.Patch,
        logger: Any,
        subscriptions_by_tenant: kopf.Index[tuple[str | None, str], dict[str, Any]],
        plans_by_name: kopf.Index[str, dict[str, Any]],
        plan_rollouts: kopf.Index[str, dict[str, Any]],
        trigger: str,
    ) -> None:
        # Paused Tenants are left exactly as they are; deleted ones are finalized.
        ctx = ctx_of(memo)
        uid = body.metadata.uid or ""
        if body.metadata.get("deletionTimestamp") or body.spec.get("paused") or uid in ctx.deleting:
            return
        key = (body.metadata.namespace, body.metadata.name or "")
        with metrics.reconcile_pass("Tenant", trigger) as outcome:
            try:
                with work.while_wanted(lambda: uid not in ctx.deleting):
                    # A slot first, outside the lock: a finalizer is never kept waiting
                    # behind a pass that waits for its turn.
                    async with ctx.passes.slot(), ctx.lock(key):
                        if uid in ctx.deleting:  # marked while this pass waited
                            raise Deleting()
                        status, r = await reconcile(
                            ctx,
                            body,
                            subscriptions_by_tenant.get(key, []),
                            plans_by_name,
                            plan_rollouts,
                            logger,
                        )
            except (Deleting, work.Abandoned):
                outcome.result = "deleting"
                return
            outcome.result = _result(r)
            ready = next((o for o in reversed(r.observed) if o.type == READY), None)
            metrics.TENANTS.set(
                uid, ready.status.value if ready else "Unknown", ready.reason if ready else ""
            )
            license_ = status.get("license", body.status.get("license"))
            metrics.LICENSES.set(uid, key[0] or "", key[1], license_)
            if trigger == "drift":
                metrics.DRIFT_CHECKS.labels(result="repaired" if r.changed else "unchanged").inc()
            # An unchanged Tenant costs the API server no write at all.
            if any(body.status.get(field) != value for field, value in status.items()):
                patch.status.update(status)
        if isinstance(r.problem, ChartUnavailable):
            # Shown in Ready, and tried again when the chart cache's backoff ends.
            raise kopf.TemporaryError(r.problem.message, delay=r.problem.delay)

    @kopf.on.resume(*tenants, id="reconcile", when=sharding.tenants, registry=registry)
    @kopf.on.create(*tenants, id="reconcile", when=sharding.tenants, registry=registry)
    @kopf.on.update(*tenants, id="reconcile", when=sharding.tenants, registry=registry)
    @errors.boundary
    async def reconcile_tenant(
        body: kopf.Body, memo: kopf.Memo, patch: kopf.Patch, logger: Any, **kwargs: Any
    ) -> None:
        await run(body, memo, patch, logger, kwargs["subscriptions_by_tenant"],
                  kwargs["plans_by_name"], kwargs["plan_rollouts"], trigger="change")  # fmt: skip

    def spread(**_: Any) -> float:
        # The first check of each Tenant falls anywhere in one more interval, so that a
        # thousand Tenants created or resumed together are not checked together.
        return drift_interval * (1 + random.random())  # noqa: S311 - spreading, not secrecy

    @kopf.timer(*tenants, id="repair", interval=drift_interval, initial_delay=spread,
                when=sharding.tenants, registry=registry)  # fmt: skip
    @errors.boundary
    async def repair_tenant(
        body: kopf.Body,
        memo: kopf.Memo,
        patch: kopf.Patch,
        logger: Any,
        **kwargs: Any,
    ) -> None:
        stopped: kopf.DaemonStopped = kwargs["stopped"]
        exiting = ctx_of(memo).exiting
        # Behind every creation, deletion and resume; cancelled (with its helm process)
        # as soon as the Tenant is deleted or the operator stops.
        with work.periodic():
            await work.unless_stopped(
                run(
                    body,
                    memo,
                    patch,
                    logger,
                    kwargs["subscriptions_by_tenant"],
                    kwargs["plans_by_name"],
                    kwargs["plan_rollouts"],
                    trigger="drift",
                ),
                stopped.wait(),
                exiting.wait(),
            )
        if (
            stopped.reason is not None
            and kopf.DaemonStoppingReason.OPERATOR_EXITING in stopped.reason
        ):
            exiting.set()  # the first check to hear of it ends every other one

    @kopf.on.delete(*tenants, id="finalize", when=sharding.tenants, registry=registry)
    @errors.boundary
    async def delete_tenant(
        body: kopf.Body, memo: kopf.Memo, logger: Any, retry: int, **_: Any
    ) -> None:
        ctx, uid = ctx_of(memo), body.metadata.uid or ""
        ctx.deleting.add(uid)
        async with ctx.lock((body.metadata.namespace, body.metadata.name)):
            await finalize(ctx, body, logger, retry)
        # Finalized: the Tenant goes, and no pass of it can follow.
        ctx.deleting.discard(uid)
        metrics.TENANTS.forget(uid)
        metrics.LICENSES.forget(uid)

    subscription_views_seen: dict[tuple[str | None, str | None], tuple[Any, ...]] = {}

    @kopf.on.event(GROUP, VERSION, SubscriptionKind.plural, id="nudge",
                   when=sharding.tenant_parts, registry=registry)  # fmt: skip
    @errors.boundary
    async def subscription_changed(type: str, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        # `type` is None for the initial listing: Tenants resume by themselves. Other
        # writes of the status than what a Tenant reads are not its concern.
        seen = tenant_reads(body)
        key = (body.metadata.namespace, body.metadata.name)
        before, subscription_views_seen[key] = subscription_views_seen.get(key), seen
        if not type or (type != "DELETED" and before == seen):
            return
        if type == "DELETED":
            subscription_views_seen.pop(key, None)
        tenant = (body.spec.get("tenantRef") or {}).get("name")
        if tenant and body.metadata.namespace:
            cause = f"Subscription/{body.metadata.name}@{body.metadata.get('resourceVersion')}"
            await ctx_of(memo).cluster.nudge_tenant(body.metadata.namespace, tenant, cause)

    plan_generations: dict[str, int | None] = {}

    @kopf.on.event(GROUP, VERSION, PlanKind.plural, id="nudge", registry=registry)
    @errors.boundary
    async def plan_changed(type: str, body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
        # Only a new spec concerns the Tenants: the Plan's status is written at every step
        # of a rollout, and its own rollout moves the Tenants it means to (operator/rollout.py).
        name, generation = body.metadata.name or "", body.metadata.get("generation")
        seen, plan_generations[name] = plan_generations.get(name), generation
        if not type or (type != "DELETED" and seen == generation):
            return
        subscriptions_by_tenant: kopf.Index[tuple[str | None, str], dict[str, Any]] = kwargs[
            "subscriptions_by_tenant"
        ]
        cause = f"Plan/{body.metadata.name}@{body.metadata.get('resourceVersion')}"
        nudges = [
            ctx_of(memo).cluster.nudge_tenant(namespace, tenant, cause)
            for (namespace, tenant), subscriptions in subscriptions_by_tenant.items()
            if any(
                (s["spec"].get("planRef") or {}).get("name") == body.metadata.name
                for s in subscriptions
            )
        ]
        await asyncio.gather(*nudges)


def _result(r: Reconcile) -> str:
    if isinstance(r.problem, NotReady):
        return "not_ready"
    if isinstance(r.problem, InvalidSpec):
        return "invalid"
    return "ok"
