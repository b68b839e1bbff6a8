"""The guard in front of Streamlit's routes: sign-in cookie, upload and request bounds, rate limits, message filter.

It is an ASGI middleware of the :mod:`webapp.serve` app (``streamlit run webapp/serve.py``), so it sees every HTTP
request and websocket message before Streamlit does:

- **Sign-in cookie** ``affectlab_session``: a random browser id, HMAC-signed with the server's cookie secret, set
  ``HttpOnly`` on the first page load (``SameSite=Lax``; ``SameSite=None; Secure; Partitioned`` inside the Hugging
  Face Spaces iframe). The app binds what a browser may do (access codes entered, the login checked) to that id in
  :data:`grants`, and re-reads the cookie from ``st.context.cookies`` on every script run: a Streamlit session id
  replayed from another client (it is in every upload URL) carries no cookie, so it grants nothing.
- **Uploads** (``/_stcore/upload_file/...``) are refused with 403 before a byte of the body is read unless the
  cookie is signed in, and capped at ``AFFECTLAB_MAX_UPLOAD_MB``; any other request body is capped at 64 KB.
- **Rate limits** per client address: page requests, uploads and websocket connections.
- ``/_stcore/metrics`` is not served.
- **Websocket messages**: "clear cache", "run on save" and debug messages from browsers are dropped (they would
  clear the shared models and database for everyone); a browser that is not signed in may only run the script.
- ``X-Forwarded-For`` is replaced by the one client address the guard trusts (``AFFECTLAB_PROXY_HOPS`` front
  proxies; 1 on a Space), so the app can throttle wrong codes per client.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Any

log = logging.getLogger("affectlab.guard")

COOKIE = "affectlab_session"
COOKIE_MAX_AGE_S = 12 * 3600
"""A sign-in lasts this long (and the browser id with it)."""
MAX_BODY = 64 * 1024
"""Bytes of any request body other than an upload."""
MAX_WS_MESSAGE = 2 * 1024 * 1024
"""Bytes of one websocket message from a browser (widget values; files go through uploads)."""
UPLOAD_PATH = "/_stcore/upload_file/"
BLOCKED_PATHS = ("/_stcore/metrics",)
DROPPED_MESSAGES = frozenset(
    {"clear_cache", "set_run_on_save", "load_git_info", "debug_disconnect_websocket", "debug_shutdown_runtime"}
)
SIGNED_OUT_MESSAGES = frozenset({"rerun_script", "app_heartbeat", "stop_script", "file_urls_request"})
"""What a browser that is not signed in may send: running the script (the sign-in step) and keeping alive."""

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyTooLargeError(Exception):
    """A request body passed its limit; the guard answers 413 and stops reading."""


# ------------------------------------------------------------------------------------------------- cookie


class CookieSigner:
    """Issues and checks ``<browser id>.<issued>.<signature>`` values (HMAC-SHA256 over the first two parts)."""

    def __init__(self, secret: bytes, max_age_s: int = COOKIE_MAX_AGE_S, clock: Callable[[], float] = time.time):
        if len(secret) < 16:
            raise ValueError(
                "the cookie secret needs 16 bytes or more: set AFFECTLAB_COOKIE_SECRET to a long "
                "random string, or leave it unset for a random one per start"
            )
        self._key = hashlib.sha256(b"affectlab-session\0" + secret).digest()
        self.max_age_s = max_age_s
        self._clock = clock

    def _sign(self, payload: str) -> str:
        mac = hmac.new(self._key, payload.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).decode().rstrip("=")

    def issue(self) -> str:
        """A new signed cookie value with a fresh random browser id."""
        payload = f"{secrets.token_urlsafe(24)}.{int(self._clock())}"
        return f"{payload}.{self._sign(payload)}"

    def verify(self, value: str | None) -> str | None:
        """The browser id of a cookie value, None when it is absent, forged, malformed or expired."""
        if not value or len(value) > 200:
            return None
        payload, _, sig = value.rpartition(".")
        bid, _, issued = payload.partition(".")
        if not bid or not issued.isdigit() or not hmac.compare_digest(sig, self._sign(payload)):
            return None
        if not 0 <= self._clock() - int(issued) <= self.max_age_s:
            return None
        return bid


def cookie_header(value: str, *, cross_site: bool, max_age_s: int = COOKIE_MAX_AGE_S) -> str:
    """The ``Set-Cookie`` value: HttpOnly; SameSite=Lax, or None+Secure+Partitioned inside a third-party iframe."""
    same = "SameSite=None; Secure; Partitioned" if cross_site else "SameSite=Lax"
    return f"{COOKIE}={value}; Path=/; Max-Age={max_age_s}; HttpOnly; {same}"


def cookie_from_header(raw: str | None) -> str | None:
    """The ``affectlab_session`` value of a ``Cookie`` header."""
    if not raw:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(raw)
    except Exception:  # a malformed Cookie header is no credential
        return None
    morsel = jar.get(COOKIE)
    return morsel.value if morsel is not None else None


# ------------------------------------------------------------------------------------------------- grants


@dataclass
class _Entry:
    value: Any
    expires: float


class GrantStore:
    """What each signed-in browser may do, by browser id, in this process's memory (a restart signs everyone out).

    The app writes it (:meth:`put`, after a code or the login was checked) and reads it on every script run; the
    guard reads it to let uploads and other messages through.
    """

    def __init__(
        self, ttl_s: float = COOKIE_MAX_AGE_S, max_entries: int = 50_000, clock: Callable[[], float] = time.monotonic
    ):
        self._ttl, self._max, self._clock = ttl_s, max_entries, clock
        self._items: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, bid: str, value: Any) -> None:
        """Binds ``value`` (e.g. an ``access.CodeGrant``) to browser ``bid`` for the sign-in's lifetime."""
        with self._lock:
            self._items[bid] = _Entry(value, self._clock() + self._ttl)
            self._items.move_to_end(bid)
            while len(self._items) > self._max:
                self._items.popitem(last=False)

    def get(self, bid: str | None) -> Any:
        """What ``bid`` was granted, None when nothing (or it expired)."""
        if not bid:
            return None
        with self._lock:
            entry = self._items.get(bid)
            if entry is None:
                return None
            if entry.expires < self._clock():
                del self._items[bid]
                return None
            return entry.value

    def revoke(self, bid: str | None) -> None:
        """Signs browser ``bid`` out."""
        with self._lock:
            self._items.pop(bid or "", None)


# ------------------------------------------------------------------------------------------------- rate limits


@dataclass(frozen=True)
class Rate:
    """A token bucket: ``burst`` requests at once, refilled at ``per_s`` per second."""

    burst: float
    per_s: float


DEFAULT_RATES: dict[str, Rate] = {
    "http": Rate(burst=300, per_s=20),  # a page load fetches ~50 static files
    "upload": Rate(burst=20, per_s=0.5),
    "ws": Rate(burst=20, per_s=0.5),  # websocket connections (one per tab, plus reconnects)
}


class RateLimiter:
    """Token buckets per (client, kind); the oldest clients are forgotten past ``max_clients``."""

    def __init__(
        self,
        rates: dict[str, Rate] | None = None,
        max_clients: int = 20_000,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.rates = dict(DEFAULT_RATES if rates is None else rates)
        self._max, self._clock = max_clients, clock
        self._buckets: OrderedDict[tuple[str, str], tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def allow(self, client: str, kind: str) -> bool:
        """Takes one token of ``client``'s ``kind`` bucket; False when it is empty."""
        rate = self.rates.get(kind)
        if rate is None:
            return True
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.get((client, kind), (rate.burst, now))
            tokens = min(rate.burst, tokens + (now - last) * rate.per_s)
            ok = tokens >= 1
            self._buckets[(client, kind)] = (tokens - 1 if ok else tokens, now)
            self._buckets.move_to_end((client, kind))
            while len(self._buckets) > self._max:
                self._buckets.popitem(last=False)
            return ok


# ------------------------------------------------------------------------------------------------- the guard


@dataclass
class GuardState:
    """The guard's process-wide state, shared with the app's script runs (:func:`active`).

    Attributes:
        signer: Signs and checks the cookie.
        grants: What each browser may do.
        max_upload_bytes: Largest upload.
        cross_site: The app is shown in a third-party iframe (Hugging Face Space): SameSite=None cookies.
        proxy_hops: Front proxies whose ``X-Forwarded-For`` entry is trusted (0: the peer address is the client).
        limiter: The rate limits.
    """

    signer: CookieSigner
    grants: GrantStore = field(default_factory=GrantStore)
    max_upload_bytes: int = 200 * 1024 * 1024
    cross_site: bool = False
    proxy_hops: int = 0
    limiter: RateLimiter = field(default_factory=RateLimiter)


_state: GuardState | None = None
TEST_GRANTS = GrantStore()
"""Grants of AppTest sessions (no server, no network, no cookie): bound to the session, as nothing else exists."""


def install(state: GuardState) -> GuardState:
    """Makes ``state`` the process's guard (:mod:`webapp.serve` does, once)."""
    global _state
    _state = state
    return state


def active() -> GuardState | None:
    """The guard serving this process, None when the app runs without it (``streamlit run webapp/app.py``)."""
    return _state


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}


def client_address(scope: Scope, proxy_hops: int) -> str:
    """The client's address: the peer's, or the entry ``proxy_hops`` from the right of ``X-Forwarded-For``."""
    peer = (scope.get("client") or ("unknown", 0))[0]
    if proxy_hops <= 0:
        return str(peer)
    chain = [p.strip() for p in _headers(scope).get("x-forwarded-for", "").split(",") if p.strip()]
    return chain[-proxy_hops] if len(chain) >= proxy_hops else str(peer)


async def _answer(send: Send, status: int, text: str, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    body = (text + "\n").encode()
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class Guard:
    """The ASGI middleware (see the module docstring). Install a :class:`GuardState` first."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Checks one HTTP request or websocket connection and passes it on (or answers it)."""
        state = _state
        if state is None or scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        client = client_address(scope, state.proxy_hops)
        headers = [(k, v) for k, v in scope.get("headers") or [] if k.lower() != b"x-forwarded-for"]
        scope = dict(scope, headers=[*headers, (b"x-forwarded-for", client.encode())])
        if scope["type"] == "websocket":
            await self._websocket(state, scope, receive, send, client)
        else:
            bid = _bid_of(state, scope)
            await self._http(state, scope, receive, send, client, bid, state.grants.get(bid) is not None)

    async def _http(
        self,
        state: GuardState,
        scope: Scope,
        receive: Receive,
        send: Send,
        client: str,
        bid: str | None,
        signed_in: bool,
    ) -> None:
        path = scope.get("path", "")
        if any(path.rstrip("/").endswith(p) for p in BLOCKED_PATHS):
            await _answer(send, 404, "Not found.")
            return
        upload = UPLOAD_PATH in path
        if not state.limiter.allow(client, "upload" if upload else "http"):
            log.warning("rate limit: %s requests from %s refused", "upload" if upload else "page", client)
            await _answer(send, 429, "Too many requests: wait a minute and try again.", [(b"retry-after", b"60")])
            return
        has_body = scope.get("method") in ("POST", "PUT", "PATCH")
        if upload and has_body and not signed_in:
            log.warning("upload refused: client %s is not signed in", client)
            await _answer(send, 403, "Sign in first (access code or login), then upload.")
            return
        limit = state.max_upload_bytes + MAX_BODY if upload else MAX_BODY  # multipart headers on top of the file
        length = _headers(scope).get("content-length", "")
        if length.isdigit() and int(length) > limit:
            await _answer(send, 413, f"Too large: at most {state.max_upload_bytes // (1024 * 1024)} MB per file.")
            return
        seen = 0

        async def bounded_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message.get("type") == "http.request":
                seen += len(message.get("body") or b"")
                if seen > limit:
                    raise BodyTooLargeError
            return message

        started = False

        async def send_with_cookie(message: Message) -> None:
            nonlocal started
            if message.get("type") == "http.response.start":
                started = True
                if bid is None and not upload:
                    cookie = cookie_header(state.signer.issue(), cross_site=state.cross_site)
                    message = dict(message, headers=[*message.get("headers", []), (b"set-cookie", cookie.encode())])
            await send(message)

        try:
            await self.app(scope, bounded_receive, send_with_cookie)
        except BodyTooLargeError:
            log.warning("request body over %d bytes from %s refused", limit, client)
            if not started:
                await _answer(send, 413, f"Too large: at most {state.max_upload_bytes // (1024 * 1024)} MB per file.")

    async def _websocket(self, state: GuardState, scope: Scope, receive: Receive, send: Send, client: str) -> None:
        if not state.limiter.allow(client, "ws"):
            log.warning("rate limit: websocket connection from %s refused", client)
            await send({"type": "websocket.close", "code": 1008})
            return
        from streamlit.proto.BackMsg_pb2 import BackMsg

        async def filtered_receive() -> Message:
            while True:
                message = await receive()
                if message.get("type") != "websocket.receive":
                    return message
                data = message.get("bytes") or b""
                if len(data) > MAX_WS_MESSAGE:
                    log.warning("websocket message of %d bytes from %s: connection closed", len(data), client)
                    return {"type": "websocket.disconnect", "code": 1009}
                back = BackMsg()
                try:
                    back.ParseFromString(data)
                except Exception:  # Streamlit closes the connection on it; let it
                    return message
                kind = back.WhichOneof("type")
                allowed = SIGNED_OUT_MESSAGES if not state.grants.get(_bid_of(state, scope)) else None
                if kind in DROPPED_MESSAGES or (allowed is not None and kind not in allowed):
                    log.warning(
                        "dropped a %r message from %s (%s)",
                        kind,
                        client,
                        "signed in" if allowed is None else "not signed in",
                    )
                    continue
                return message

        await self.app(scope, filtered_receive, send)


def _bid_of(state: GuardState, scope: Scope) -> str | None:
    """The browser id of a connection (re-read per message: a sign-in after the connection opened counts)."""
    return state.signer.verify(cookie_from_header(_headers(scope).get("cookie")))
