"""`tenantry quote`: what one full paid period of a Plan costs for given usage.

The Plan comes from a manifest file or, by name, from the cluster; pricing is
`core/pricing.py`'s, with no trial, proration, discount or tax. Every failure
is one line on stderr that says what was wrong and how to fix it, with exit
status 2 when the command line is wrong and 1 otherwise; never a traceback.
"""

from __future__ import annotations

import decimal
import json
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from tenantry.core.money import EXACT, exponent, format_amount, multiply, plain
from tenantry.core.pricing import MeteredCharge, Quote, quote, quote_json
from tenantry.core.resources import API_VERSION, MeteredPrice, PlanSpec

FAILED = 1
USAGE = 2

_QUANTITY = re.compile(r"[0-9]+(\.[0-9]+)?")
_PLAN_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


class QuoteError(Exception):
    """What went wrong, for the user, and the exit status it ends with."""

    def __init__(self, message: str, status: int = FAILED) -> None:
        super().__init__(message)
        self.status = status


def run(plan_reference: str, usage_entries: list[str], *, as_json: bool = False) -> int:
    """Print the quote (or one line on stderr) and return the exit status."""
    try:
        usage = parse_usage(usage_entries)
        name, plan = load_plan(plan_reference)
        try:
            result = quote(name, plan, usage)
        except ValueError as error:
            raise QuoteError(f"{error}; fix --usage", USAGE) from None
        except decimal.DecimalException:  # past the digits `money.EXACT` holds
            raise QuoteError(
                "the quantities and prices have too many digits to price exactly: give "
                "quantities up to 10^15 with at most 12 decimal places",
                USAGE,
            ) from None
    except QuoteError as error:
        print(f"tenantry quote: {error}", file=sys.stderr)
        return error.status
    if as_json:
        print(json.dumps(quote_json(result), indent=2))
    else:
        print(render(result, plan))
    return 0


def parse_usage(entries: list[str]) -> dict[str, int | Decimal]:
    usage: dict[str, int | Decimal] = {}
    for entry in entries:
        metric, sign, figure = (part.strip() for part in entry.partition("="))
        if not sign or not metric:
            raise QuoteError(f"--usage {entry!r}: write METRIC=QTY, e.g. messages=1000", USAGE)
        if not _QUANTITY.fullmatch(figure):
            raise QuoteError(
                f"--usage {entry!r}: the quantity must be a number ≥ 0 such as 1000 or 2.5, "
                f"not {figure!r}",
                USAGE,
            )
        if metric in usage:
            raise QuoteError(f"--usage names {metric!r} twice: give each metric once", USAGE)
        usage[metric] = Decimal(figure) if "." in figure else int(figure)
    return usage


def load_plan(reference: str) -> tuple[str, PlanSpec]:
    """The Plan's name and spec, from the file `reference` or else the cluster."""
    path = Path(reference)
    if path.is_file():
        return _plan_from_file(path)
    if path.exists():
        raise QuoteError(f"{reference} is not a file: give a Plan manifest or a Plan's name")
    if not _PLAN_NAME.fullmatch(reference) or reference.endswith((".yaml", ".yml", ".json")):
        raise QuoteError(f"cannot read {reference}: no such file", USAGE)
    return _plan_from_cluster(reference)


def _plan_from_file(path: Path) -> tuple[str, PlanSpec]:
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeError) as error:
        raise QuoteError(
            f"cannot read {path}: {getattr(error, 'strerror', None) or error}"
        ) from None
    try:
        documents = list(yaml.load_all(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)))
    except yaml.YAMLError as error:
        raise QuoteError(f"{path} is not valid YAML: {_yaml_problem(error)}") from None
    plans = [d for d in documents if isinstance(d, dict) and d.get("kind") == "Plan"]
    if not plans:
        raise QuoteError(f"{path} holds no Plan: give a manifest with a `kind: Plan` document")
    if len(plans) > 1:
        names = ", ".join(str(_name(plan)) for plan in plans)
        raise QuoteError(f"{path} holds {len(plans)} Plans ({names}): keep one in the file")
    return _plan_from_manifest(plans[0], str(path))


def _yaml_problem(error: Exception) -> str:
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    return f"{problem} at line {mark.line + 1}" if mark is not None else problem


def _name(manifest: dict[str, Any]) -> str | None:
    metadata = manifest.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    return name if isinstance(name, str) else None


def _plan_from_manifest(manifest: dict[str, Any], where: str) -> tuple[str, PlanSpec]:
    name = _name(manifest)
    if name is None:
        raise QuoteError(f"{where}: the Plan has no metadata.name: add one")
    if manifest.get("apiVersion") != API_VERSION:
        raise QuoteError(
            f"{where}: Plan {name} has apiVersion {manifest.get('apiVersion')!r}; "
            f"write apiVersion: {API_VERSION}"
        )
    spec = manifest.get("spec")
    if not isinstance(spec, dict):
        raise QuoteError(f"{where}: Plan {name} has no spec: add one (see manifests/samples)")
    try:
        return name, PlanSpec.model_validate(spec)
    except ValidationError as error:
        problems = "; ".join(_problem(p) for p in error.errors())
        raise QuoteError(f"{where}: Plan {name} is invalid: {problems}") from None


def _problem(problem: Any) -> str:
    where = "spec"
    for step in problem["loc"]:
        where += f"[{step}]" if isinstance(step, int) else f".{step}"
    message = str(problem["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}"


def _plan_from_cluster(name: str) -> tuple[str, PlanSpec]:
    import asyncio

    from lightkube import AsyncClient
    from lightkube.generic_resource import create_global_resource

    from tenantry.core.resources import GROUP, VERSION, PlanKind

    resource = create_global_resource(GROUP, VERSION, PlanKind.kind, PlanKind.plural)

    async def read() -> dict[str, Any]:
        client = AsyncClient(field_manager="tenantry-cli")
        try:
            return dict(await client.get(resource, name))
        finally:
            await client.close()

    with _kubernetes_errors(name):
        manifest = asyncio.run(read())
    return _plan_from_manifest(manifest, f"Plan {name} in the cluster")


@contextmanager
def _kubernetes_errors(name: str) -> Iterator[None]:
    """lightkube's and its transport's errors as the user's next step."""
    import httpx2
    from lightkube import ConfigError
    from lightkube.core.exceptions import ApiError

    try:
        yield
    except ApiError as error:
        status = error.status
        if status.code == 404 and status.details is not None and status.details.name == name:
            raise QuoteError(
                f"no file {name} here and no Plan {name} in the cluster: "
                "`kubectl get plans` lists the Plans"
            ) from None
        if status.code == 404:
            raise QuoteError(
                "the cluster has no Plan resource: apply the CRDs first (kubectl apply -f crds/)"
            ) from None
        raise QuoteError(
            f"Kubernetes refused to read Plan {name}: {status.code} {status.message}"
        ) from None
    except ConfigError as error:
        raise QuoteError(
            f"no Kubernetes configuration to read Plan {name} ({error}): "
            "set KUBECONFIG, or give a Plan manifest file"
        ) from None
    except httpx2.HTTPError as error:
        try:
            url = error.request.url
            where = f" at {url.scheme}://{url.netloc.decode()}"
        except RuntimeError:  # an error raised before the request was built
            where = ""
        raise QuoteError(
            f"cannot reach Kubernetes{where} to read Plan {name} ({type(error).__name__}: "
            f"{error}): check KUBECONFIG and the cluster, or give a Plan manifest file"
        ) from None


# ------------------------------------------------------------------- the table


def render(q: Quote, plan: PlanSpec) -> str:
    """The quote as a table, the tiers and their arithmetic under each charge."""
    currency = q.currency
    rows: list[tuple[str, str, str, str, str]] = [
        ("", "quantity", "billable", "amount", "model"),
        ("base fee", "1", "1", format_amount(q.base_fee, currency), ""),
    ]
    details: dict[int, list[str]] = {}
    prices = {price.metric: price for price in plan.metered_prices}
    for charge in q.charges:
        model = charge.model.value
        if charge.allowance:
            model += f", allowance {_group(str(charge.allowance))}"
        rows.append(
            (
                charge.metric,
                _group(plain(charge.quantity)),
                _group(plain(charge.billable)),
                format_amount(charge.amount, currency),
                model,
            )
        )
        details[len(rows) - 1] = _arithmetic(charge, prices[charge.metric], currency)
    rows.append(("total", "", "", format_amount(q.total, currency), currency))
    widths = [max(len(row[column]) for row in rows) for column in range(4)]
    lines = [
        f"Plan {q.plan} ({plan.display_name}): one full {plan.price.interval.value} in "
        f"{currency}, with no trial, proration, discount or tax.",
        "",
    ]
    for index, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [
            cell.rjust(w) for cell, w in zip(row[1:4], widths[1:], strict=True)
        ]
        lines.append("  ".join([*cells, row[4]]).rstrip())
        lines.extend(f"    {detail}" for detail in details.get(index, []))
    return "\n".join(lines)


def _arithmetic(charge: MeteredCharge, price: MeteredPrice, currency: str) -> list[str]:
    """`tier 2: 400 × 0.05 = 20.00 + flat 1.00`: how a charge adds up, in major units."""
    total = _major(charge.unrounded, currency)
    if charge.unit_amount is not None:  # per_unit
        return [f"{_units(charge.billable)} × {_major(charge.unit_amount, currency)} = {total}"]
    if charge.packages is not None:
        size, each = charge.package_size or 0, format_amount(price.package_amount or 0, currency)
        return [f"{charge.packages:,} × package of {size:,} at {each} = {total}"]
    lines = []
    for part in charge.tiers:
        line = (
            f"tier {part.tier}: {_units(part.units)} × {_major(part.unit_amount, currency)} = "
            f"{_major(multiply(part.units, part.unit_amount), currency)}"
        )
        if part.flat_amount:
            line += f" + flat {format_amount(part.flat_amount, currency)}"
        lines.append(line)
    return lines


def _units(value: Decimal) -> str:
    return _group(plain(value))


def _major(minor: Decimal, currency: str) -> str:
    """Minor units in major units: at least the currency's digits, and every exact one."""
    digits = exponent(currency)
    text = plain(EXACT.scaleb(minor, -digits))
    whole, _, fraction = text.partition(".")
    fraction = fraction.ljust(digits, "0")
    return _group(whole) + (f".{fraction}" if fraction else "")


def _group(number: str) -> str:
    """Thousands separators in a plain decimal string: `1234567.5` → `1,234,567.5`."""
    whole, point, fraction = number.partition(".")
    sign = "-" if whole.startswith("-") else ""
    return f"{sign}{int(whole.lstrip('-') or 0):,}{point}{fraction}"
