"""`tenantry api serve` and `tenantry api migrate`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from typing import TYPE_CHECKING

from pydantic import ValidationError

if TYPE_CHECKING:
    from tenantry.api.settings import ApiSettings

log = logging.getLogger("tenantry.api")


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

    settings = _settings(serving=True)  # refuse bad settings before any worker starts
    with _metrics_directory(settings.api_metrics_port != 0):
        if settings.api_metrics_port:
            _serve_metrics(args.host, settings.api_metrics_port)
        uvicorn.run(
            "tenantry.api.app:create_app",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            log_level=args.log_level.lower(),
            # `tenantry`'s (cli/logs.py) in every worker; uvicorn's own under `python -m`.
            log_config=getattr(args, "log_config", None) or uvicorn.config.LOGGING_CONFIG,
            access_log=args.access_log,
            proxy_headers=True,
            forwarded_allow_ips=args.forwarded_allow_ips,
        )
    return 0


def _serve_metrics(host: str, port: int) -> None:
    """The sum of every worker's metrics on `host:port` (`GET /metrics`), from a thread of
    this process, which counts nothing itself (api/metrics.py)."""
    from prometheus_client import CollectorRegistry, start_http_server, values
    from prometheus_client.multiprocess import MultiProcessCollector

    if values.ValueClass is values.MutexValue:
        raise RuntimeError(
            "prometheus_client was imported before PROMETHEUS_MULTIPROC_DIR was set: "
            "this process's metrics would not be in the sum"
        )
    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    try:
        start_http_server(port, addr=host, registry=registry)
    except OSError as error:
        # Serving requests matters more than counting them: say so, and go on.
        log.error("Serving no metrics: port %d: %s", port, error)
        return
    log.info("Serving metrics on %s:%d (/metrics)", host, port)


@contextlib.contextmanager
def _metrics_directory(wanted: bool) -> Iterator[None]:
    """A fresh PROMETHEUS_MULTIPROC_DIR for the workers' metrics (api/metrics.py), set
    before anything imports prometheus_client and removed when serving ends."""
    if not wanted:
        yield
        return
    directory = tempfile.mkdtemp(prefix="tenantry-api-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    # uvicorn raises the SIGTERM it stopped on again once it has: end through `finally`.
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        yield
    finally:
        shutil.rmtree(directory, ignore_errors=True)
        signal.signal(signal.SIGTERM, previous)


def _terminated(signum: int, _: object) -> None:
    raise SystemExit(128 + signum)


def _migrate(args: argparse.Namespace) -> int:
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
    if args.output == "json":
        print(json.dumps({"applied": applied}, indent=2))
    else:
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
    migrate.add_argument(
        "--output", "-o", choices=["text", "json"], default="text",
        help="text for people (default) or one JSON object",
    )  # fmt: skip
    migrate.set_defaults(func=_migrate)


def main(argv: list[str] | None = None) -> int:
    """`python -m tenantry.api.cli serve|migrate`, the same as `tenantry api ...`."""
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
