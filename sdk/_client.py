"""`Client`: what an instance does with Tenantry, over one key and one state directory."""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from tenantry import license as lic
from tenantry.sdk._errors import AuthError
from tenantry.sdk._license import LicenseKeeper
from tenantry.sdk._queue import Parked, UsageQueue
from tenantry.sdk._sender import Sender
from tenantry.sdk._transport import Transport

QUEUE_FILE = "usage.sqlite3"
MAX_VALUE = 10**12
"""The API's largest event value."""
_METRIC = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_TRANSACTION_ID = re.compile(r"^[!-~]{1,128}$")

Health = Literal["healthy", "degraded", "unhealthy"]
Figure = int | Decimal | str


@dataclass(frozen=True)
class Consumed:
    """A quota check that admitted the work (and counted it)."""

    metric: str
    duplicate: bool
    limit: int  # -1: unlimited
    used: int | None
    remaining: int | None  # None: unlimited
    period: str


def _timestamp(moment: dt.datetime | None) -> str:
    moment = moment or dt.datetime.now(dt.UTC)
    if moment.tzinfo is None:
        raise ValueError("timestamp must be timezone-aware (e.g. datetime.now(UTC))")
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def usage_event(
    metric: str,
    quantity: int,
    transaction_id: str,
    timestamp: dt.datetime | None,
    properties: Mapping[str, str | int | bool | None] | None,
) -> dict[str, Any]:
    """The event as the API reads it; a wrong argument raises here, not in the sender."""
    if not _METRIC.match(metric):
        raise ValueError(f"metric {metric!r} is not snake_case (e.g. `api_calls`)")
    if isinstance(quantity, bool) or not isinstance(quantity, int):
        raise TypeError(f"quantity must be an int, not {type(quantity).__name__}: {quantity!r}")
    if not 0 <= quantity <= MAX_VALUE:
        raise ValueError(f"quantity must be 0 to 10^12, not {quantity}")
    if not _TRANSACTION_ID.match(transaction_id):
        raise ValueError("transaction_id must be 1 to 128 printable ASCII characters, no spaces")
    return {
        "transaction_id": transaction_id,
        "metric": metric,
        "value": quantity,
        "timestamp": _timestamp(timestamp),
        "properties": dict(properties or {}),
    }


def figures_on_the_wire(figures: Mapping[str, Figure]) -> dict[str, int | str]:
    """Whole numbers as they are, decimals as strings; floats refused (they round)."""
    wire: dict[str, int | str] = {}
    for name, value in figures.items():
        if isinstance(value, bool | float):
            raise TypeError(f"figure {name!r}: send an int or a Decimal, not {value!r}")
        wire[name] = str(value) if isinstance(value, Decimal) else value
    return wire


class Client:
    """One instance's link to Tenantry.

    `state_dir` holds the usage queue and the license cache: keep it on a
    persistent volume, one per instance process. Use it as a context manager,
    or call `close()`: queued events are sent by a background thread.
    """

    def __init__(
        self,
        api_url: str,
        api_key: str,
        state_dir: str | Path,
        *,
        keys: lic.KeySet | None = None,
        issuer: str = "tenantry",
        audience: str = "tenantry-instance",
        grace: dt.timedelta = dt.timedelta(days=7),
        timeout: float = 10.0,
        batch_size: int = 500,
        max_delay: float = 60.0,
        send: bool = True,
    ) -> None:
        state = Path(state_dir)
        self._transport = Transport(api_url, api_key, timeout=timeout)
        self._queue = UsageQueue(state / QUEUE_FILE)
        self._license = LicenseKeeper(
            self._transport, state, keys=keys, issuer=issuer, audience=audience, grace=grace
        )
        self._sender = Sender(
            self._queue,
            lambda events: self._transport.call("POST", "/v1/usage", {"events": events}),
            batch_size=batch_size,
            max_delay=max_delay,
        )
        if send:
            self._sender.start()

    def __repr__(self) -> str:
        return f"Client({self._transport.api_url!r}, state_dir={str(self._queue.path.parent)!r})"

    # ------------------------------------------------------------ license

    def license(self) -> lic.LicenseStatus:
        """The license's status; renewed from the API when due, else the cached one."""
        return self._license.status()

    def refresh_license(self) -> lic.LicenseStatus:
        """Fetch the license now; raises if the API cannot give a usable one."""
        return self._license.refresh()

    # ------------------------------------------------------------ usage

    def record(
        self,
        metric: str,
        quantity: int,
        transaction_id: str | None = None,
        *,
        timestamp: dt.datetime | None = None,
        properties: Mapping[str, str | int | bool | None] | None = None,
    ) -> str:
        """Queue one usage event; returns its transaction id once it is on disk.

        Give a `transaction_id` that names the usage (an order id, a job id) and
        recording it twice counts it once. The sender sends it in the background.
        """
        transaction_id = transaction_id or uuid.uuid4().hex
        event = usage_event(metric, quantity, transaction_id, timestamp, properties)
        self._queue.put(transaction_id, event)
        self._sender.wake()
        return transaction_id

    @property
    def pending(self) -> int:
        """Events recorded and not yet acknowledged by the API."""
        return self._queue.pending()

    def parked(self) -> list[Parked]:
        """Events the API refused, with its reasons (kept, never dropped)."""
        return self._queue.parked()

    def requeue(self, *transaction_ids: str) -> int:
        """Send parked events again; how many were moved back to the queue."""
        moved = self._queue.requeue(transaction_ids)
        self._sender.wake()
        return moved

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every recorded event is acknowledged; False on timeout.

        Raises the `AuthError` that stopped the sender, if one did.
        """
        deadline = time.monotonic() + timeout
        while True:
            if self._sender.error is not None:
                raise self._sender.error
            if self._queue.pending() == 0:
                return True
            if time.monotonic() >= deadline:
                return False
            self._sender.wake()
            time.sleep(0.05)

    # ------------------------------------------------------------ quotas

    def consume(self, metric: str, amount: int = 1, transaction_id: str | None = None) -> Consumed:
        """Ask before serving: counts `amount` if the plan allows it, else raises
        `QuotaExceeded` (or `PermissionDenied` once the subscription has ended). A retry
        with the same `transaction_id` is not counted twice. Online: raises
        `ApiUnavailable` when the API cannot answer; choosing to serve then is yours."""
        body: dict[str, Any] = {"metric": metric, "amount": amount}
        if transaction_id is not None:
            body["transaction_id"] = transaction_id
        answer = self._transport.call("POST", "/v1/quota/consume", body)
        return Consumed(
            metric=answer["metric"],
            duplicate=answer["duplicate"],
            limit=answer["limit"],
            used=answer["used"],
            remaining=answer["remaining"],
            period=answer["period"],
        )

    def quotas(self) -> dict[str, Any]:
        """The tenant's quotas this billing period, as `GET /v1/quota` gives them."""
        answer: dict[str, Any] = self._transport.call("GET", "/v1/quota")
        return answer

    # ------------------------------------------------------------ heartbeat

    def heartbeat(
        self,
        version: str,
        health: Health = "healthy",
        message: str | None = None,
        figures: Mapping[str, Figure] | None = None,
    ) -> dict[str, Any]:
        """Tell Tenantry the instance's version and health; the API's answer
        (`received_at`, `timeout_seconds`: beat well within it)."""
        body: dict[str, Any] = {"version": version, "health": health}
        if message is not None:
            body["message"] = message
        if figures:
            body["figures"] = figures_on_the_wire(figures)
        answer: dict[str, Any] = self._transport.call("POST", "/v1/instance/heartbeat", body)
        return answer

    # ------------------------------------------------------------ life

    def close(self, timeout: float = 5.0) -> None:
        """Send what can be sent within `timeout`, then stop; the rest waits on disk."""
        if self._sender.is_alive():
            with contextlib.suppress(AuthError):  # logged when the sender stopped
                self.flush(timeout)
            self._sender.stop()
            self._sender.join(timeout)
        if self._sender.is_alive():
            return  # still waiting on the API: it ends with the process, the queue intact
        self._queue.close()
        self._transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
