"""`tenantry api serve` and `tenantry api migrate`."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TYPE_CHECKING

from pydantic import ValidationError

if TYPE_CHECKING:
    from tenantry.api.settings import ApiSettings


def _settings(serving: bool) -> ApiSettings:
    from tenantry.api.settings import ApiSettings, InsecureSettings

    try:
        settings = ApiSettings()
        if serving:
            settings.refuse_placeholders()
    except ValidationError as error:
        for problem in error.errors():
            where = ".".join(str(p) for p in problem["loc"])
            print(f"tenantry api: TENANTRY_{where.upper()}: {problem['msg']}", file=sys.stderr)
        raise SystemExit(2) from None
    except InsecureSettings as error:
        print(f"tenantry api: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    return settings


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    _settings(serving=True)  # refuse bad settings before any worker starts
    uvicorn.run(
        "tenantry.api.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level.lower(),
        access_log=args.access_log,
        proxy_headers=True,
        forwarded_allow_ips=args.forwarded_allow_ips,
    )
    return 0


def _migrate(_: argparse.Namespace) -> int:
    from tenantry.db.engine import create_engine
    from tenantry.db.migrations import migrate

    settings = _settings(serving=False)

    async def run() -> list[str]:
        engine = create_engine(settings.database_url, pool_size=settings.database_pool_size)
        try:
            return await migrate(engine)
        finally:
            await engine.dispose()

    applied = asyncio.run(run())
    print(f"Applied {', '.join(applied)}." if applied else "The schema is up to date.")
    return 0


def configure(parser: argparse.ArgumentParser) -> None:
    """Add `serve` and `migrate` under `tenantry api`."""
    commands = parser.add_subparsers(dest="api_command", required=True)
    serve = commands.add_parser("serve", help="Serve the API (uvicorn); migrates on start-up.")
    serve.add_argument("--host", default="0.0.0.0", help="Address to bind (default 0.0.0.0).")  # noqa: S104
    serve.add_argument("--port", type=int, default=8000, help="Port (default 8000).")
    serve.add_argument("--workers", type=int, default=1, help="Worker processes (default 1).")
    serve.add_argument("--access-log", action="store_true", help="Log every request.")
    serve.add_argument(
        "--forwarded-allow-ips", default="127.0.0.1", help="Proxies trusted for X-Forwarded-*."
    )
    serve.set_defaults(func=_serve)
    migrate = commands.add_parser("migrate", help="Apply pending database migrations and exit.")
    migrate.set_defaults(func=_migrate)


def main(argv: list[str] | None = None) -> int:
    """`python -m tenantry.api.cli serve|migrate`, the same as `tenantry api ...`."""
    import logging

    parser = argparse.ArgumentParser(prog="tenantry api", description=__doc__)
    parser.add_argument("--log-level", default="INFO")
    configure(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
