"""Team sign-in: the admin token exchanged for a signed, expiring session cookie.

There is no session store. The cookie is a signed link (api/links.py) naming a
random session id; every form carries a CSRF token, another signed link naming
the same id, so a form posted from another site (which cannot read the page)
is refused. The cookie is `HttpOnly`, `SameSite=Strict`, `Secure` unless
turned off, and scoped to `/dashboard`. Signing out clears it and records its
id in Redis until it would have expired, so a copied cookie stops working too;
while Redis is unreachable that record cannot be read, and the API's Redis
failure mode decides (fail open: the signature and expiry alone count).

Signing in has its own CSRF pair (a cookie and a signed form field), so another
site cannot sign a browser in under someone else's token either.
"""

from __future__ import annotations

import datetime as dt
import hmac
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import Request
from fastapi.responses import Response
from redis.asyncio import Redis
from redis.exceptions import RedisError

from tenantry.api.errors import ApiError, Forbidden
from tenantry.api.links import Links

log = logging.getLogger("tenantry.api.dashboard")

SESSION_COOKIE = "tenantry_session"
LOGIN_COOKIE = "tenantry_login"
COOKIE_PATH = "/dashboard"
LOGIN_TTL = dt.timedelta(hours=1)

_SESSION = "dashboard-session"
_CSRF = "dashboard-csrf"
_LOGIN = "dashboard-login"
_SIGNED_OUT = "dashboard:signed-out:"


class SignInRequired(Exception):
    """No valid session: the browser goes to the sign-in page."""


@dataclass(frozen=True)
class Session:
    id: str
    expires_at: dt.datetime
    csrf: str  # the token forms carry


class Sessions:
    def __init__(
        self, links: Links, redis: Redis, ttl: dt.timedelta, *, secure: bool, fail_open: bool
    ) -> None:
        self._links = links
        self._redis = redis
        self._ttl = ttl
        self._secure = secure
        self._fail_open = fail_open

    # ---------------------------------------------------------------- sign in

    def login_form(self, now: dt.datetime) -> tuple[str, Callable[[Response], None]]:
        """The CSRF token a sign-in form carries, and what sets its cookie on the response."""
        nonce = secrets.token_urlsafe(16)

        def set_cookie(response: Response) -> None:
            self._cookie(response, LOGIN_COOKIE, nonce, LOGIN_TTL)

        return self._links.sign(_LOGIN, nonce, now + LOGIN_TTL), set_cookie

    def check_login_form(self, request: Request, csrf: str, now: dt.datetime) -> None:
        nonce = request.cookies.get(LOGIN_COOKIE, "")
        if not nonce or not _same(_subject(self._links, _LOGIN, csrf, now), nonce):
            raise Forbidden(
                "The sign-in form expired or came from elsewhere: load the sign-in page again.",
                code="invalid_csrf_token",
            )

    def start(self, response: Response, now: dt.datetime) -> None:
        session_id = secrets.token_urlsafe(18)
        self._cookie(
            response,
            SESSION_COOKIE,
            self._links.sign(_SESSION, session_id, now + self._ttl),
            self._ttl,
        )
        response.delete_cookie(LOGIN_COOKIE, path=COOKIE_PATH)

    # ------------------------------------------------------------ signed in

    async def current(self, request: Request, now: dt.datetime) -> Session:
        """The request's session, not signed out; SignInRequired without a valid one."""
        session = self.signed(request, now)
        if await self.signed_out(session):
            raise SignInRequired
        return session

    def signed(self, request: Request, now: dt.datetime) -> Session:
        """The session the request's cookie names, by its signature and expiry alone
        (SignInRequired without a valid one): whether it was signed out since is
        `signed_out`'s answer."""
        token = request.cookies.get(SESSION_COOKIE)
        if not token:
            raise SignInRequired
        try:
            session_id = self._links.subject(_SESSION, token, now)
        except ApiError:
            raise SignInRequired from None
        expires = now + self._ttl  # the CSRF token lives as long as a session can
        return Session(session_id, expires, self._links.sign(_CSRF, session_id, expires))

    def check_csrf(self, session: Session, csrf: str, now: dt.datetime) -> None:
        if not _same(_subject(self._links, _CSRF, csrf, now), session.id):
            raise Forbidden(
                "This form is not from your current session: reload the page and try again.",
                code="invalid_csrf_token",
            )

    async def end(self, session: Session, response: Response) -> None:
        try:
            await self._redis.set(_SIGNED_OUT + session.id, "1", ex=int(self._ttl.total_seconds()))
        except RedisError:
            log.warning("Could not record a sign-out in Redis; the cookie is cleared only")
        response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH)

    async def signed_out(self, session: Session) -> bool:
        try:
            return bool(await self._redis.exists(_SIGNED_OUT + session.id))
        except RedisError:
            if self._fail_open:
                return False
            raise

    def _cookie(self, response: Response, name: str, value: str, ttl: dt.timedelta) -> None:
        response.set_cookie(
            name,
            value,
            max_age=int(ttl.total_seconds()),
            path=COOKIE_PATH,
            secure=self._secure,
            httponly=True,
            samesite="strict",
        )


def _subject(links: Links, purpose: str, token: str, now: dt.datetime) -> str:
    try:
        return links.subject(purpose, token, now)
    except ApiError:
        return ""


def _same(a: str, b: str) -> bool:
    return bool(a) and hmac.compare_digest(a.encode(), b.encode())
