"""The `tenantry` command."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tenantry")
    except PackageNotFoundError:  # run from a checkout without installing
        return "unknown"


def _operator(args: argparse.Namespace) -> int:
    from tenantry.operator.main import run
    from tenantry.operator.settings import OperatorSettings

    run(
        OperatorSettings(),
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

    settings = OperatorSettings()

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
    print(f"New signing key {kid} in Secret {settings.namespace}/{settings.signing_key_secret}.")
    print("Licenses signed before stay valid: their keys remain published until they expire.")
    if dropped:
        print(f"Dropped retired keys no live license needs: {', '.join(dropped)}")
    return 0


def _quote(args: argparse.Namespace) -> int:
    from tenantry.cli.quote import run

    return run(args.plan, args.usage, as_json=args.json)


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tenantry", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (default INFO)")
    commands = parser.add_subparsers(dest="command", required=True)

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
        "rotate", help="Make a new key the signer; keep old public keys while licenses need them."
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
    quote.add_argument("--json", action="store_true", help="Print the quote as one JSON object.")
    quote.set_defaults(func=_quote)

    from tenantry.api import cli as api_cli

    api_cli.configure(commands.add_parser("api", help="The API service: serve, migrate."))

    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # One line per HTTP request drowns what the operator did.
    for noisy in ("httpx", "httpx2", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
