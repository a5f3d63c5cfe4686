"""The FastAPI application: routes, error shape, start-up and shut-down."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from sqlalchemy import text

from tenantry.api import errors
from tenantry.api.apikeys.endpoints import router as apikeys_router
from tenantry.api.audit import router as audit_router
from tenantry.api.auth import SERVICE_TOKEN, SERVICE_TOKEN_SCHEME
from tenantry.api.billing.endpoints import router as billing_router
from tenantry.api.dashboard.endpoints import api as dashboard_api_router
from tenantry.api.dashboard.endpoints import router as dashboard_router
from tenantry.api.instances.endpoints import router as instances_router
from tenantry.api.licenses.endpoints import router as licenses_router
from tenantry.api.limits import BodyLimit
from tenantry.api.metrics import RequestMetrics
from tenantry.api.outbound.endpoints import router as outbound_router
from tenantry.api.quotas.endpoints import router as quotas_router
from tenantry.api.request_id import RequestId
from tenantry.api.runtime import Runtime
from tenantry.api.settings import ApiSettings
from tenantry.api.signup.endpoints import router as signup_router
from tenantry.api.stripe.endpoints import StripeWebhooks
from tenantry.api.stripe.endpoints import router as stripe_router
from tenantry.api.stripe.session_endpoints import router as stripe_sessions_router
from tenantry.api.usage.endpoints import OPENAPI_COMPONENTS
from tenantry.api.usage.endpoints import router as usage_router

log = logging.getLogger("tenantry.api")

DESCRIPTION = """\
Customer instances and gateways talk to Tenantry here: they present an API key,
report what they used, check quotas and fetch their license.

Every error has the body `{"error": {"code", "message", "details"}}`.
"""


def operation_id(route: APIRoute) -> str:
    """The route function's name in camelCase (`get_invoice_pdf` -> `getInvoicePdf`): readable
    in generated clients, and stable while the function keeps its name."""
    first, *rest = route.name.split("_")
    return first + "".join(word.capitalize() for word in rest)


def create_app(settings: ApiSettings | None = None) -> FastAPI:
    """The application; settings from the environment (`TENANTRY_*`) unless given."""
    settings = settings or ApiSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.runtime = await Runtime.start(settings)
        # What start-up built lives as long as the process: keep it out of the
        # garbage collector's scans, which otherwise grow with every import.
        gc.freeze()
        log.info("API service started (environment %s, Redis failure mode %s)",
                 settings.environment, settings.redis_failure_mode)  # fmt: skip
        try:
            yield
        finally:
            await app.state.runtime.close()

    app = FastAPI(
        title="Tenantry API",
        version="v1",
        description=DESCRIPTION,
        lifespan=lifespan,
        generate_unique_id_function=operation_id,
    )
    errors.install(app)
    app.include_router(stripe_router)
    app.include_router(apikeys_router)
    app.include_router(usage_router)
    app.include_router(quotas_router)
    app.include_router(licenses_router)
    app.include_router(instances_router)
    app.include_router(billing_router)
    app.include_router(outbound_router)
    app.include_router(audit_router)
    app.include_router(stripe_sessions_router)
    app.include_router(signup_router)
    app.include_router(dashboard_api_router)
    app.include_router(dashboard_router)  # HTML pages, left out of the OpenAPI document
    app.add_api_route("/healthz", healthz, methods=["GET"], tags=["health"],
                      summary="The process is alive")  # fmt: skip
    app.add_api_route(
        "/readyz", readyz, methods=["GET"], tags=["health"],
        summary="PostgreSQL and Redis are reachable (or Redis is down and serving fails open)",
        responses={503: {"description": "Not ready: PostgreSQL, or Redis when failing closed."}},
    )  # fmt: skip
    # Around Starlette's own error handling: a failed request still counts, with its 500,
    # and its 500 carries its request id. (Metrics have a port of their own: api/metrics.py.)
    # Then the body limit, for every route; then Stripe's route, served ahead of the
    # application's routing and error layers (it answers its own errors): Stripe waits
    # for its answers, and those layers would cost as much again as checking the event.
    inner = app.build_middleware_stack
    app.build_middleware_stack = lambda: RequestId(  # type: ignore[method-assign]
        RequestMetrics(BodyLimit(StripeWebhooks(inner()), limit=settings.max_body_bytes))
    )

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description,
                routes=app.routes,
            )  # fmt: skip
            components = schema.setdefault("components", {})
            components.setdefault("schemas", {}).update(OPENAPI_COMPONENTS)
            # Declared here: the introspection route checks its token without a dependency.
            components.setdefault("securitySchemes", {})[SERVICE_TOKEN_SCHEME] = SERVICE_TOKEN
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


async def healthz() -> dict[str, str]:
    return {"status": "ok"}


async def readyz(request: Request) -> JSONResponse:
    rt: Runtime = request.app.state.runtime
    database = "ok"
    try:
        async with rt.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception as error:
        database = f"unreachable: {type(error).__name__}"
    redis_ok = await rt.counters.available() and await rt.counters.ping()
    ready = database == "ok" and (redis_ok or rt.fail_open)
    body = {
        "status": "ready" if ready and redis_ok else ("degraded" if ready else "not ready"),
        "database": database,
        "redis": "ok" if redis_ok else "unreachable",
        "redis_failure_mode": rt.settings.redis_failure_mode,
        "counters": rt.counters.status(),
    }
    return JSONResponse(body, status_code=200 if ready else 503)
