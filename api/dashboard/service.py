"""What the dashboard keeps for the life of the process: settings, sessions, the fleet
list, the last reads of tenant pages (repository.py `LastReads`) and the templates. Built
once in `Runtime.start`."""

from __future__ import annotations

import datetime as dt
import functools
import re
from dataclasses import dataclass
from importlib import resources

from jinja2 import ChoiceLoader, Environment, PackageLoader, StrictUndefined
from redis.asyncio import Redis

from tenantry.api.billing.documents import exact_amount, period_dates, utc_date
from tenantry.api.dashboard.fleet import Fleet
from tenantry.api.dashboard.repository import LastReads
from tenantry.api.dashboard.session import Sessions
from tenantry.api.dashboard.settings import DashboardSettings
from tenantry.api.links import Links
from tenantry.api.tenants.kube import Kube
from tenantry.core.money import exponent, format_amount, format_money, plain


def words(reason: str) -> str:
    """`ReleaseDeployed` reads `Release deployed`."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", reason)
    return spaced[:1].upper() + spaced[1:].lower()


LAST_READS = 64
"""Tenant pages whose last read is kept to compare the next with (tens of KB each with
a month of hourly usage): the pages people have open, not the fleet."""

CUSTOMER_LINK = "dashboard-customer"
"""The purpose of a customer's signed link; its subject is `namespace/name/uid`."""


@dataclass
class Dashboard:
    settings: DashboardSettings
    sessions: Sessions
    fleet: Fleet
    last_reads: LastReads
    templates: Environment

    @classmethod
    def start(
        cls, settings: DashboardSettings, links: Links, redis: Redis, kube: Kube, *, fail_open: bool
    ) -> Dashboard:
        return cls(
            settings=settings,
            sessions=Sessions(
                links,
                redis,
                dt.timedelta(seconds=settings.session_ttl),
                secure=settings.secure_cookie,
                fail_open=fail_open,
            ),
            fleet=Fleet(kube, settings.fleet_ttl),
            last_reads=LastReads(LAST_READS),
            templates=environment(),
        )


@functools.cache
def environment() -> Environment:
    """The dashboard's templates, with the invoice templates behind them (an invoice page
    extends `invoice.html`) and the invoice documents' filters for every figure."""
    env = Environment(
        loader=ChoiceLoader(
            [
                PackageLoader("tenantry.api.dashboard", "templates"),
                PackageLoader("tenantry.api.billing", "templates"),
            ]
        ),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        amount=format_amount,
        money=format_money,
        exact=exact_amount,
        decimal=plain,
        date=utc_date,
        period=period_dates,
        when=_when,
        words=words,
    )
    env.globals["exponent"] = exponent
    return env


def _when(moment: dt.datetime | None) -> str:
    """`2026-11-30 14:05 UTC`, or a dash."""
    if moment is None:
        return "–"
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


STATIC = {
    "dashboard.css": ("tenantry.api.dashboard", "static/dashboard.css"),
    "invoice.css": ("tenantry.api.billing", "templates/invoice.css"),
}


def static_file(name: str) -> bytes | None:
    """A stylesheet: the dashboard's own, or the invoices' (shared with the PDF)."""
    return _read_static(name) if name in STATIC else None


@functools.cache
def _read_static(name: str) -> bytes:
    package, path = STATIC[name]
    return resources.files(package).joinpath(path).read_bytes()
