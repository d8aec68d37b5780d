"""Who may use the UI: the token (when there is one), CSRF checks, and safe response headers."""

from __future__ import annotations

import hmac
from urllib.parse import urlencode, urlsplit

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

COOKIE = "durapipe_ui_token"

# No inline script or style and nothing from elsewhere: the page loads only its own files.
# No referrer, so a URL holding ?token= is never sent on; no framing (clickjacking).
HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'self'",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "x-content-type-options": "nosniff",
}


def _same(a: str | None, b: str) -> bool:
    return a is not None and hmac.compare_digest(a.encode(), b.encode())


class Guard:
    """ASGI middleware: with a token, every request carries it (``Authorization: Bearer``, or
    the cookie set from a ``?token=`` login); without one (loopback), nothing is asked."""

    def __init__(self, app: ASGIApp, *, token: str | None) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_safe(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for k, v in HEADERS.items():
                    headers.setdefault(k, v)
            await send(message)

        if self.token is not None:
            request = Request(scope)
            given = request.query_params.get("token")
            if given is not None:
                if not _same(given, self.token):
                    await _refuse(scope, receive, send_safe, "the token in the URL is wrong")
                    return
                # Logged in once: a cookie from now on, and the token out of the address bar.
                rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
                url = request.url.path + ("?" + urlencode(rest) if rest else "")
                response = RedirectResponse(url, status_code=303)
                response.set_cookie(
                    COOKIE,
                    self.token,
                    httponly=True,
                    samesite="strict",
                    secure=request.url.scheme == "https",
                )
                await response(scope, receive, send_safe)
                return
            auth = request.headers.get("authorization", "")
            bearer = auth[7:] if auth.lower().startswith("bearer ") else None
            if not (_same(bearer, self.token) or _same(request.cookies.get(COOKIE), self.token)):
                await _refuse(
                    scope,
                    receive,
                    send_safe,
                    "this durapipe UI needs its token: open it once as URL?token=TOKEN, "
                    "or send the header 'Authorization: Bearer TOKEN'",
                )
                return
        await self.app(scope, receive, send_safe)


async def _refuse(scope: Scope, receive: Receive, send: Send, why: str) -> None:
    await PlainTextResponse(f"401 Unauthorized: {why}\n", status_code=401)(scope, receive, send)


def check_csrf(request: Request, given: str | None, expected: str) -> bool:
    """A state-changing POST came from one of our own pages: it carries this process's form
    token, and its Origin (when the browser sends one) is this server."""
    if not _same(given, expected):
        return False
    origin = request.headers.get("origin")
    if origin and origin != "null":
        return urlsplit(origin).netloc == request.headers.get("host", "")
    return True
