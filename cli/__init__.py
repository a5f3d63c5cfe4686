"""The `tenantry` command.

Commands that print data print text for people, or with `--output json` one JSON
object with the same figures. Failures are one line on stderr and exit 2 (the
command line or a setting is wrong) or 1 (something the command needs failed):
see `tenantry.cli.errors`.
"""

from __future__ import annotations

import argparse
import json
import logging.config
import sys
from pathlib import Path
from typing import Any, NoReturn

from tenantry.cli import errors, logs


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tenantry")
    except PackageNotFoundError:  # run from a checkout without installing
        return "unknown"


def _print(args: argparse.Namespace, data: dict[str, Any], text: str) -> None:
    print(json.dumps(data, indent=2) if args.output == "json" else text)


def _show_version(args: argparse.Namespace) -> int:
    _print(args, {"version": _version()}, f"tenantry {_version()}")
    return 0


def _operator(args: argparse.Namespace) -> int:
    import shutil

    from tenantry.operator.main import run
    from tenantry.operator.settings import OperatorSettings

    settings = errors.load_settings(OperatorSettings)
    # Checked before kopf starts: kopf would retry its start-up forever instead.
    if not (settings.chart_path / "Chart.yaml").is_file():
        raise errors.CommandError(
            f"no chart at {settings.chart_path}: set TENANTRY_OPERATOR_CHART_PATH to the "
            "customer-instance chart's folder, or unset it for the packaged one",
            errors.USAGE,
        )
    if shutil.which(settings.helm) is None:
        raise errors.CommandError(
            f"no helm executable {settings.helm!r}: install helm (make tools builds it), "
            "or set TENANTRY_OPERATOR_HELM to its path"
        )
    errors.check_kubernetes()
    if settings.database_url:
        errors.check_postgres(settings.database_url, "TENANTRY_OPERATOR_DATABASE_URL")
    run(
        settings,
        standalone=args.standalone,
        priority=args.priority,
        liveness=args.liveness,
        peering_name=args.peering,
    )
    return 0


def _keys_rotate(args: argparse.Namespace) -> int:
    import asyncio
    import datetime as dt

    from lightkube import AsyncClient

    from tenantry.operator.keys import SigningKeys
    from tenantry.operator.settings import OperatorSettings

    settings = errors.load_settings(OperatorSettings)

    async def rotate() -> tuple[str, list[str]]:
        client = AsyncClient(field_manager="tenantry-cli")
        try:
            keys = SigningKeys(
                client,
                settings.namespace,
                settings.signing_key_secret,
                args.algorithm or settings.signing_algorithm,
                public_name=settings.public_keys_configmap,
            )
            return await keys.rotate(
                dt.datetime.now(dt.UTC),
                license_ttl=settings.license_ttl,
                grace=settings.license_grace,
            )
        finally:
            await client.close()

    kid, dropped = asyncio.run(rotate())
    secret = f"{settings.namespace}/{settings.signing_key_secret}"
    text = (
        f"New signing key {kid} in Secret {secret}.\n"
        "Licenses signed before stay valid: their keys remain published until they expire."
    )
    if dropped:
        text += f"\nDropped retired keys no live license needs: {', '.join(dropped)}"
    _print(args, {"kid": kid, "secret": secret, "dropped": dropped}, text)
    return 0


def _quote(args: argparse.Namespace) -> int:
    from tenantry.cli.quote import run

    return run(args.plan, args.usage, as_json=args.json or args.output == "json")


def _crds(args: argparse.Namespace) -> int:
    from tenantry.operator import crds

    if args.check:
        stale = crds.stale(args.output)
        for path in stale:
            print(
                f"{path} differs from the models: run `make crds` and commit it.", file=sys.stderr
            )
        return 1 if stale else 0
    for path in crds.write_all(args.output):
        print(f"Wrote {path}")
    return 0


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """A wrong command line in one line, not argparse's usage block."""
        self.exit(errors.USAGE, f"{self.prog}: {message}: see {self.prog} --help\n")


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="tenantry", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (default INFO)")
    parser.add_argument(
        "--log-format",
        choices=logs.FORMATS,
        default="text",
        help="text, or json: one object a line with time, level, logger, message and the "
        "object or request it is about (default text)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    # Every command that prints data takes it.
    output = _Parser(add_help=False)
    output.add_argument(
        "--output", "-o", choices=["text", "json"], default="text",
        help="text for people (default) or one JSON object",
    )  # fmt: skip

    version = commands.add_parser("version", parents=[output], help="Print the version.")
    version.set_defaults(func=_show_version)

    operator = commands.add_parser("operator", help="Run the operator (kopf).")
    operator.add_argument(
        "--standalone", action="store_true", help="Skip peering: for a single replica."
    )
    operator.add_argument(
        "--peering",
        default="tenantry",
        help="The ClusterKopfPeering the replicas meet in (default tenantry; made if missing).",
    )
    operator.add_argument(
        "--priority",
        type=int,
        default=None,
        help="Peering priority; the highest live replica acts (default: the oldest acts).",
    )
    operator.add_argument(
        "--liveness", default=None, help="Serve a liveness probe, e.g. http://0.0.0.0:8080/healthz"
    )
    operator.set_defaults(func=_operator)

    keys = commands.add_parser("keys", help="Manage the license signing keys.")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    rotate = key_commands.add_parser(
        "rotate",
        parents=[output],
        help="Make a new key the signer; keep old public keys while licenses need them.",
    )
    rotate.add_argument(
        "--algorithm", choices=["RS256", "EdDSA"], default=None, help="Default: the current one."
    )
    rotate.set_defaults(func=_keys_rotate)

    crds = commands.add_parser("crds", help="Render the CRDs from the models.")
    crds.add_argument("--output", type=Path, default=Path("crds"), help="Directory (default crds).")
    crds.add_argument(
        "--check", action="store_true", help="Fail if the files differ from the models."
    )
    crds.set_defaults(func=_crds)

    quote = commands.add_parser(
        "quote",
        parents=[output],
        help="Price one full paid period of a Plan for given usage.",
        description="What one full paid period of a Plan costs for the usage given: the base "
        "fee and each metered price, with no trial, proration, discount or tax.",
    )
    quote.add_argument(
        "--plan",
        required=True,
        metavar="FILE|NAME",
        help="A Plan manifest (YAML), or else the name of a Plan in the cluster (KUBECONFIG).",
    )
    quote.add_argument(
        "--usage",
        action="append",
        default=[],
        metavar="METRIC=QTY",
        help="The period's quantity of a metric, e.g. messages=2500000; once per metric "
        "(a priced metric not given counts 0).",
    )
    quote.add_argument("--json", action="store_true", help="The same as --output json.")
    quote.set_defaults(func=_quote)

    from tenantry.api import cli as api_cli

    api_cli.configure(commands.add_parser("api", help="The API service: serve, migrate."))

    args = parser.parse_args(argv)
    # Kept on `args`: `tenantry api serve` has each worker process configured alike.
    args.log_config = logs.config(args.log_level, args.log_format)
    logging.config.dictConfig(args.log_config)
    return _run(args)


def _run(args: argparse.Namespace) -> int:
    """The command, its usual failures as one line on stderr and an exit status."""
    try:
        if args.command == "api":
            _check_api(args)
        with errors.kubernetes():
            return int(args.func(args))
    except Exception as error:
        known = errors.explain(error)
        if known is None:
            raise
        print(f"tenantry: {known}", file=sys.stderr)
        return known.status
    except KeyboardInterrupt:
        return 130


def _check_api(args: argparse.Namespace) -> None:
    """What `tenantry api serve` would otherwise find out in each worker, with a traceback."""
    from tenantry.api.billing.settings import BillingSettings
    from tenantry.api.dashboard.settings import DashboardSettings
    from tenantry.api.outbound.settings import WebhookSettings
    from tenantry.api.settings import ApiSettings, InsecureSettings
    from tenantry.api.signup.settings import SignupSettings
    from tenantry.api.stripe.settings import StripeSettings

    settings = errors.load_settings(ApiSettings)
    serving = args.api_command == "serve"
    if serving:
        try:
            settings.refuse_placeholders()
        except InsecureSettings as error:
            raise errors.CommandError(str(error), errors.USAGE) from None
        for component in (BillingSettings, DashboardSettings, WebhookSettings, SignupSettings,
                          StripeSettings):  # fmt: skip
            errors.load_settings(component)
    errors.check_postgres(settings.database_url, "TENANTRY_DATABASE_URL")
    if not serving:
        return
    with errors.kubernetes():
        from lightkube import KubeConfig

        KubeConfig.from_env()
    if settings.redis_failure_mode == "fail_closed":  # fail_open serves without it
        errors.check_redis(settings.redis_url, "TENANTRY_REDIS_URL")


if __name__ == "__main__":
    sys.exit(main())
