"""HTTP to the Tenantry API, and its failures mapped to the SDK's exceptions in one place.

The API key goes only into the `Authorization` header of the one client built
here; it is never part of a message, a log line or a repr.
"""

from __future__ import annotations

import contextlib
from typing import Any

import httpx

from tenantry.sdk._errors import (
    ApiKeyRejected,
    ApiUnavailable,
    InvalidRequest,
    PermissionDenied,
    QuotaExceeded,
    TenantryError,
)


class Transport:
    def __init__(self, api_url: str, api_key: str, *, timeout: float = 10.0) -> None:
        self.api_url = api_url.rstrip("/")
        self._client = httpx.Client(
            base_url=self.api_url,
            headers={"Authorization": f"Bearer {api_key.strip()}"},
            timeout=timeout,
            follow_redirects=False,
        )

    def __repr__(self) -> str:
        return f"Transport({self.api_url!r})"

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """The decoded JSON answer of a 2xx; an SDK exception for anything else."""
        try:
            answer = self._client.request(method, path, json=body)
        except httpx.TimeoutException as error:
            raise ApiUnavailable(f"{method} {path}: no answer in time ({error!r})") from error
        except httpx.TransportError as error:
            raise ApiUnavailable(f"{method} {path}: {type(error).__name__}: {error}") from error
        if answer.is_success:
            return answer.json() if answer.content else None
        raise refusal(method, path, answer)

    def close(self) -> None:
        self._client.close()


def refusal(method: str, path: str, answer: httpx.Response) -> TenantryError:
    """The exception for a non-2xx answer, from its status and its error body."""
    code: str | None = None
    message = answer.text[:300]
    details: dict[str, Any] = {}
    with contextlib.suppress(ValueError, AttributeError, TypeError, KeyError):
        error = answer.json()["error"]
        code, message, details = (
            error.get("code"),
            error.get("message", message),
            error.get("details") or {},
        )
    said = f"{method} {path} -> {answer.status_code}: {message}"
    status = answer.status_code
    fields: dict[str, Any] = {"status": status, "code": code, "details": details}
    if status == 401:
        return ApiKeyRejected(said, **fields)
    if status == 403:
        return PermissionDenied(said, **fields)
    if status == 429 and code == "limit_exceeded":
        return QuotaExceeded(said, **fields)
    if status in (400, 413, 422):
        return InvalidRequest(said, **fields)
    if status == 429 or status >= 500:
        return ApiUnavailable(said, retry_after=_retry_after(answer), **fields)
    return TenantryError(said, **fields)


def _retry_after(answer: httpx.Response) -> float | None:
    value = answer.headers.get("Retry-After", "")
    return float(value) if value.isdigit() else None
