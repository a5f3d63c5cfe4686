"""What the `tenantry` command says when it cannot do its job: one line on stderr.

Every usual mistake ends in one line, ``tenantry: <what is wrong>: <what to do>``,
and an exit status; never a traceback (a traceback means a bug: report it):

- 2: the command line or a setting is wrong (a bad ``TENANTRY_*`` variable, a
  file named on the command line that is not there); fix it and run again;
- 1: the command was right, but something it needs failed: no Kubernetes
  configuration, Kubernetes, PostgreSQL or Redis unreachable or refusing, a
  file that cannot be read or written.

Third-party errors are mapped to `CommandError` here, once per outside system
(`kubernetes()`, `postgres()`, `redis()`), as httpx maps httpcore's. Secrets
never reach the line: URLs are shown as ``host:port``, and no message quotes a
setting's value.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsError

FAILED = 1
USAGE = 2

S = TypeVar("S", bound=BaseSettings)


class CommandError(Exception):
    """What went wrong and what to do, for the user, and the exit status it ends with."""

    def __init__(self, message: str, status: int = FAILED) -> None:
        super().__init__(message)
        self.status = status


def load_settings(factory: Callable[[], S]) -> S:
    """Settings from the environment; a bad one is a usage error naming its variable."""
    try:
        return factory()
    except ValidationError as error:
        prefix = str(getattr(factory, "model_config", {}).get("env_prefix", ""))
        problems = "; ".join(_setting_problem(prefix, p) for p in error.errors())
        raise CommandError(f"bad setting: {problems}: fix it, or unset it", USAGE) from None
    except SettingsError as error:  # a complex value that is not JSON
        raise CommandError(f"bad setting: {error}: fix it, or unset it", USAGE) from None


def _setting_problem(prefix: str, problem: Any) -> str:
    field, *inside = problem["loc"] or ("",)
    name = f"{prefix}{field}".upper() if field else f"{prefix}*"
    for step in inside:
        name += f"[{step}]" if isinstance(step, int) else f".{step}"
    return f"{name}: {str(problem['msg']).removeprefix('Value error, ')}"


# ------------------------------------------------------------------- Kubernetes


@contextmanager
def kubernetes() -> Iterator[None]:
    """lightkube's and its transport's errors as the user's next step."""
    import httpx2
    from lightkube import ConfigError
    from lightkube.core.exceptions import ApiError

    try:
        yield
    except ConfigError as error:
        raise CommandError(
            f"no Kubernetes configuration ({error}): set KUBECONFIG to a kubeconfig file, "
            "or run in a Pod with a service account"
        ) from None
    except httpx2.TransportError as error:
        raise CommandError(
            f"cannot reach Kubernetes{_server(error)} ({_reason(error)}): start the cluster, "
            "or point KUBECONFIG at one that runs"
        ) from None
    except ApiError as error:
        status = error.status
        hint = {
            401: "the credentials in KUBECONFIG are not accepted: renew them",
            403: "the account lacks the permission: grant it (see charts/tenantry's RBAC)",
            404: "the CRDs are missing: kubectl apply --server-side -f crds/",
        }.get(status.code or 0, "check the cluster")
        raise CommandError(
            f"Kubernetes refused the request ({status.code} {status.reason}: {status.message}): "
            f"{hint}"
        ) from None


def _server(error: Any) -> str:
    try:
        url = error.request.url
    except RuntimeError:  # raised before a request was built
        return ""
    return f" at {url.scheme}://{url.host}:{url.port or 443}"


def check_kubernetes() -> None:
    """Load the configuration as the operator does and ask the API server one question."""
    import httpx2
    from lightkube import ApiError, Client
    from lightkube.resources.core_v1 import Namespace

    with kubernetes():
        client = Client(field_manager="tenantry-cli", timeout=httpx2.Timeout(10))
        try:
            client.get(Namespace, "default")
        except ApiError as error:
            if error.status.code == 401:
                raise
            # Anything else answered: the server is there; what the account may
            # read is the RBAC's business, checked where it is used.
        finally:
            client.close()


# ------------------------------------------------------------------- PostgreSQL


@contextmanager
def postgres(url: str, setting: str) -> Iterator[None]:
    """The database driver's errors, naming the server (never the password) and the setting."""
    import psycopg
    from sqlalchemy.exc import ArgumentError, InterfaceError, OperationalError

    try:
        yield
    except ArgumentError:
        raise CommandError(
            f"{setting} is not a database URL: write postgresql+psycopg://USER:PASSWORD@HOST:5432/DB",
            USAGE,
        ) from None
    except (OperationalError, InterfaceError, psycopg.OperationalError, OSError) as error:
        reason = _postgres_reason(error)
        what = "start it" if "refused" in reason or "timeout" in reason else "fix the URL"
        raise CommandError(
            f"cannot reach PostgreSQL at {_address(url, 5432)} ({reason}): {what} or set {setting}"
        ) from None


def check_postgres(url: str, setting: str) -> None:
    """Connect once: the server is up and takes these credentials."""
    import psycopg
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    with postgres(url, setting):
        parsed = make_url(url)
        if parsed.get_backend_name() != "postgresql":
            raise ArgumentError(parsed.drivername)
        libpq = parsed.set(drivername="postgresql")
        with psycopg.connect(libpq.render_as_string(hide_password=False), connect_timeout=5):
            pass


def _postgres_reason(error: BaseException) -> str:
    """libpq's reason, e.g. `connection refused`, `password authentication failed for user
    "tenantry"`; libpq never repeats the password."""
    original = getattr(error, "orig", None) or error
    lines = [line.strip() for line in str(original).splitlines() if line.strip()]
    first = lines[0] if lines else type(original).__name__
    # 'connection failed: connection to server at "127.0.0.1", port 5432 failed: X'
    reason = first.rsplit(" failed: ", 1)[-1].removeprefix("connection failed: ")
    return reason[:1].lower() + reason[1:]


# ------------------------------------------------------------------------ Redis


@contextmanager
def redis(url: str, setting: str) -> Iterator[None]:
    from redis.exceptions import ConnectionError, TimeoutError

    try:
        yield
    except (ConnectionError, TimeoutError, OSError) as error:
        reason = str(error).rsplit(". ", 1)[-1].rstrip(".") or type(error).__name__
        raise CommandError(
            f"cannot reach Redis at {_address(url, 6379)} ({reason[:1].lower()}{reason[1:]}): "
            f"start it or set {setting}"
        ) from None


def check_redis(url: str, setting: str) -> None:
    from redis import Redis

    with redis(url, setting):
        client = Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        try:
            client.ping()
        finally:
            client.close()


# ----------------------------------------------------------------------- common


def _address(url: str, default_port: int) -> str:
    """`host:port` of a URL: what to check, without user or password."""
    match = re.match(r"^[a-z][a-z0-9+.-]*://(?:[^@/]*@)?(\[[^]]*\]|[^:/?#]*)(?::(\d+))?", url)
    if match is None:
        return "the configured address"
    return f"{match.group(1) or 'localhost'}:{match.group(2) or default_port}"


def _reason(error: BaseException) -> str:
    cause: BaseException | None = error
    while cause is not None:  # the socket's own words, under the transport's summary
        if isinstance(cause, OSError) and (cause.errno or cause.strerror):
            return (os.strerror(cause.errno) if cause.errno else str(cause.strerror)).lower()
        cause = cause.__cause__ or cause.__context__
    text = str(error).strip()
    # httpx wraps the socket's error: "[Errno 111] Connection refused" -> "connection refused"
    text = re.sub(r"^\[Errno -?\d+\]\s*", "", text.splitlines()[-1] if text else "")
    return (text[:1].lower() + text[1:]) if text else type(error).__name__


def explain(error: BaseException) -> CommandError | None:
    """A usual failure that reached the command's edge unmapped, or None: a bug."""
    if isinstance(error, CommandError):
        return error
    if isinstance(error, FileNotFoundError | PermissionError | IsADirectoryError):
        where = f"{error.filename}: " if error.filename else ""
        return CommandError(f"{where}{(error.strerror or str(error)).lower()}: check the path")
    return None
