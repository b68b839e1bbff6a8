"""The guard in front of Streamlit's routes: sign-in cookie, upload and request bounds, rate limits, message filter.

It is an ASGI middleware of the :mod:`webapp.serve` app (``streamlit run webapp/serve.py``), so it sees every HTTP
request and websocket message before Streamlit does:

- **Sign-in cookie** ``affectlab_session``: a random browser id, HMAC-signed with the server's cookie secret, set
  ``HttpOnly`` on the first page load (``SameSite=Lax``; ``SameSite=None; Secure; Partitioned`` inside the Hugging
  Face Spaces iframe). The app binds what a browser may do (access codes entered, the login checked) to that id in
  :data:`grants`, and re-reads the cookie from ``st.context.cookies`` on every script run: a Streamlit session id
  replayed from another client (it is in every upload URL) carries no cookie, so it grants nothing.
- **Uploads** (``/_stcore/upload_file/...``) are refused with 403 before a byte of the body is read unless the
  cookie is signed in, and capped at ``AFFECTLAB_MAX_UPLOAD_MB``; any other request body is capped at 64 KB. An
  upload's file is written to disk as it arrives (:class:`UploadSpool`) and Streamlit holds a stand-in; pages read
  it through :func:`upload_content`.
- **Rate limits** per client address: page requests, uploads and websocket connections.
- ``/_stcore/metrics`` is not served.
- **Websocket messages**: "clear cache", "run on save" and debug messages from browsers are dropped (they would
  clear the shared models and database for everyone); a browser that is not signed in may only run the script.
- **Sessions belong to browsers**: the guard learns each Streamlit session id from the server's own ``new_session``
  message and binds it to the browser id of the connection that opened it. A websocket asking to resume a session
  (the third ``Sec-WebSocket-Protocol`` entry) whose browser id differs gets a new session instead, and an upload to a
  session of another browser is refused: a session id alone (it is in every upload URL) reaches nothing.
- **A fresh cookie at sign-in**: the app shows an invisible image (:data:`RENEW_PATH` with a one-time token) after a
  code is accepted or a login is first seen (:meth:`GuardState.sign_in`); its request moves the grant to a new
  browser id and sets that cookie, and the session and its open connection follow, so a cookie known before sign-in
  (planted, or another tab's) is worth nothing afterwards.
- **Signed-out connections**: a connection whose cookie holds no grant may only run the whole script (the sign-in
  step): fragment reruns are dropped and only the sign-in widgets' values (:data:`SIGNED_OUT_WIDGET_KEYS`) go
  through, so no callback or fragment registered while the browser was signed in runs once it is not.
- **Floods**: per connection, reruns and other messages are rate limited (over the limit they are dropped; a
  connection that keeps flooding is closed), script runs in flight per client address are capped (a further rerun
  waits), and open connections per client address are capped. ``server.maxMessageSize`` (16 MB) bounds a websocket
  frame before it is buffered; :data:`MAX_WS_MESSAGE` bounds it after.
- ``/media/...`` (crops, exports) needs a signed-in cookie.
- **Host header**: with ``AFFECTLAB_ALLOWED_HOSTS`` set, or the server bound to a loopback address, any other Host
  is refused (DNS rebinding against the local mode).
- **Versions**: the Streamlit and Python versions in ``new_session`` are blanked.
- **Client address**: the peer's address, or the entry ``AFFECTLAB_PROXY_HOPS`` from the right of
  ``X-Forwarded-For`` when the peer is a configured proxy (``AFFECTLAB_TRUSTED_PROXIES``; loopback by default).
  ``X-Forwarded-For`` from anyone else is ignored, including what uvicorn already rewrote from it. The app
  throttles wrong codes per client address.
- **Body timeouts**: a request body that stalls ``BODY_TIMEOUT_S`` between chunks is answered 408.
- **Header timeouts**: request headers not complete within ``HEADER_TIMEOUT_S`` of the connection's opening (or of
  a keep-alive request's first byte) get 408 and the connection is closed (:func:`with_header_timeout`, installed
  into uvicorn by :mod:`webapp.serve`).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import logging
import os
import secrets
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

from core.settings import forwarded_allow_ips

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
SIGNED_OUT_MESSAGES = frozenset({"rerun_script", "app_heartbeat", "stop_script"})
"""What a browser that is not signed in may send: running the script (the sign-in step) and keeping alive."""
SIGNED_OUT_WIDGET_KEYS = frozenset({"w_access_code", "w_access_enter", "w_sign_in", "w_gate_sign_out"})
"""Widget keys whose values a signed-out connection may send (the sign-in form; see ``webapp.state.Keys``)."""
MEDIA_PATH = "/media/"
"""Streamlit's media route (``/{baseUrlPath}/media/{file}``: images, crops, downloads), for signed-in browsers only."""
RENEW_PATH = "_affectlab/renew"
"""The request (an invisible image the app shows after a sign-in) that swaps the browser's cookie for a new one."""
RENEW_TTL_S = 300.0
_PIXEL = base64.b64decode("R0lGODlhAQABAAAAACH5BAEAAAAALAAAAAABAAEAAAIBAAA=")
BODY_TIMEOUT_S = 30.0
"""Seconds a request body may stall between two chunks."""
HEADER_TIMEOUT_S = 10.0
"""Seconds from a connection's opening (or a keep-alive request's first byte) to the end of its request headers."""
MAX_PARSED_REPLY = 64 * 1024
"""Server messages up to this size are read by the guard (session ids, run ends, versions); larger ones are deltas."""
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")

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
        if not isinstance(value, str) or not value or len(value) > 200:
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
RERUN_RATE = Rate(burst=20, per_s=4)
"""Script runs one connection may ask for (a browser asks once per widget change)."""
MESSAGE_RATE = Rate(burst=60, per_s=20)
"""Websocket messages of any kind one connection may send."""
FLOOD_CLOSE_AFTER = 200
"""Messages dropped in a row over the rates after which the connection is closed."""


class Bucket:
    """One token bucket (one connection's)."""

    def __init__(self, rate: Rate, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self._clock = rate, clock
        self.tokens, self.last = rate.burst, clock()

    def take(self) -> bool:
        """Takes a token; False when none is left."""
        now = self._clock()
        self.tokens = min(self.rate.burst, self.tokens + (now - self.last) * self.rate.per_s)
        self.last = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


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


# ------------------------------------------------------------------------------------------------- sessions


class SessionOwners:
    """Which browser id each Streamlit session was opened by (learned from the server's ``new_session`` message)."""

    def __init__(self, max_sessions: int = 100_000) -> None:
        self._max = max_sessions
        self._items: OrderedDict[str, str | None] = OrderedDict()
        self._lock = threading.Lock()

    def bind(self, session_id: str, bid: str | None) -> None:
        """Records that ``bid``'s connection got session ``session_id`` (a first binding is never replaced)."""
        with self._lock:
            if session_id not in self._items:
                self._items[session_id] = bid
                while len(self._items) > self._max:
                    self._items.popitem(last=False)

    def rebind(self, session_id: str, bid: str) -> None:
        """Moves a session to a renewed browser id (:meth:`Guard._renew`)."""
        with self._lock:
            self._items[session_id] = bid

    def owner(self, session_id: str | None) -> tuple[bool, str | None]:
        """Whether ``session_id`` is bound, and to which browser id."""
        with self._lock:
            if not session_id or session_id not in self._items:
                return False, None
            return True, self._items[session_id]

    def belongs(self, session_id: str, bid: str | None) -> bool:
        """Whether a connection with browser id ``bid`` may resume ``session_id`` (never without a browser id)."""
        with self._lock:
            return bid is not None and session_id in self._items and self._items[session_id] == bid


class ClientSlots:
    """Open websocket connections and script runs in flight, per client address."""

    def __init__(self) -> None:
        self.connections: dict[str, int] = {}
        self.running: dict[str, int] = {}

    def _add(self, table: dict[str, int], client: str, n: int) -> None:
        table[client] = table.get(client, 0) + n
        if table[client] <= 0:
            del table[client]


# ------------------------------------------------------------------------------------------------- upload spool

SPOOL_MARK = b"affectlab-spooled-upload:"
"""What Streamlit holds in place of a spooled upload's bytes: this prefix and the upload's token."""
SPOOL_CLIENT_UPLOADS = 5
"""Uploads of the largest size one client address may hold on disk at once (``AFFECTLAB_MAX_UPLOAD_MB`` each)."""
SPOOL_TOTAL_UPLOADS = 25
"""Uploads of the largest size the whole server may hold on disk at once."""
MAX_PART_HEADERS = 16 * 1024
"""Bytes of a multipart part's headers (file name, content type)."""


@dataclass
class Spooled:
    """One upload on disk.

    Attributes:
        token: Its random token (what Streamlit holds, after :data:`SPOOL_MARK`).
        path: The file (0600, in the spool folder).
        size: Its bytes.
        session_id: The Streamlit session it was uploaded to (only that session's runs read it).
        file_id: Streamlit's id of the upload.
        client: The client address that sent it.
        created: When (monotonic seconds).
    """

    token: str
    path: Path
    size: int
    session_id: str
    file_id: str
    client: str
    created: float


class UploadSpool:
    """Uploads on disk instead of in memory: a folder (0700) of files (0600), bounded per client and in all.

    The guard writes an upload's file here as its body arrives (a chunk at a time) and hands Streamlit a tiny
    stand-in (:data:`SPOOL_MARK` + token); the app reads the file through :func:`upload_content`. A file goes when
    Streamlit forgets the upload (the widget drops it, its session ends: :meth:`watch`), when it is replaced, after
    :data:`COOKIE_MAX_AGE_S`, and with the folder when the process exits.
    """

    def __init__(
        self,
        max_total_bytes: int = 5 * 1024**3,
        max_client_bytes: int = 1024**3,
        root: Path | None = None,
        ttl_s: float = COOKIE_MAX_AGE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_total_bytes, self.max_client_bytes = max_total_bytes, max_client_bytes
        self._root, self._ttl, self._clock = root, ttl_s, clock
        self._dir: Path | None = None
        self._by_token: dict[str, Spooled] = {}
        self._by_upload: dict[tuple[str, str], str] = {}
        self._pending: dict[str, tuple[str, int]] = {}  # token -> (client, bytes so far) of uploads in flight
        self._lock = threading.Lock()
        self._watched: set[int] = set()
        self._gone: dict[str, float] = {}  # session id -> when its last connection closed
        self._lockfile: Any = None

    @property
    def folder(self) -> Path:
        """The spool folder, made (0700) on first use and removed at exit.

        It holds a lock file locked for the process's lifetime; folders of processes that ended without removing
        theirs (killed) are found unlocked and removed then.
        """
        with self._lock:
            if self._dir is None:
                import atexit
                import fcntl
                import shutil
                import tempfile

                if self._root is not None:
                    self._root.mkdir(mode=0o700, parents=True, exist_ok=True)
                    for old in self._root.glob("affectlab-uploads-*"):
                        try:
                            with open(old / ".lock", "rb") as held:
                                fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # its process is gone
                        except OSError:
                            continue  # another live server's (or no lock file yet)
                        shutil.rmtree(old, ignore_errors=True)
                self._dir = Path(tempfile.mkdtemp(prefix="affectlab-uploads-", dir=self._root))
                os.chmod(self._dir, 0o700)
                self._lockfile = open(self._dir / ".lock", "wb")  # noqa: SIM115  # held until exit
                fcntl.flock(self._lockfile, fcntl.LOCK_EX)
                atexit.register(shutil.rmtree, self._dir, True)
            return self._dir

    def used(self, client: str | None = None) -> int:
        """Bytes on disk (and in flight), of ``client`` or of everyone."""
        with self._lock:
            return self._used(client)

    def _used(self, client: str | None) -> int:
        done = sum(r.size for r in self._by_token.values() if client is None or r.client == client)
        return done + sum(n for c, n in self._pending.values() if client is None or c == client)

    def begin(self, client: str, suffix: str) -> tuple[str, Path]:
        """A token and a new file (0600) for an upload from ``client``."""
        self._expire()
        token = secrets.token_urlsafe(24)
        path = self.folder / f"{token}{suffix}"
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        with self._lock:
            self._pending[token] = (client, 0)
        return token, path

    def grow(self, token: str, n: int) -> str | None:
        """Counts ``n`` more bytes of an upload in flight; why there is no room for them, None when there is."""
        with self._lock:
            client, done = self._pending[token]
            self._pending[token] = (client, done + n)
            if self._used(None) > self.max_total_bytes:
                return f"the server's upload space ({self.max_total_bytes // 2**20} MB) is full"
            if self._used(client) > self.max_client_bytes:
                return f"your uploads ({self.max_client_bytes // 2**20} MB in all) fill your share of the server"
            return None

    def room(self, client: str, size: int) -> str | None:
        """Why an upload of ``size`` bytes from ``client`` does not fit, None when it does."""
        with self._lock:
            if self._used(None) + size > self.max_total_bytes:
                return f"the server's upload space ({self.max_total_bytes // 2**20} MB) is full"
            if self._used(client) + size > self.max_client_bytes:
                return f"your uploads ({self.max_client_bytes // 2**20} MB in all) fill your share of the server"
            return None

    def abandon(self, token: str, path: Path) -> None:
        """Removes an upload that did not complete."""
        with self._lock:
            self._pending.pop(token, None)
        path.unlink(missing_ok=True)

    def finish(self, token: str, path: Path, session_id: str, file_id: str) -> Spooled:
        """Records a complete upload (replacing one with the same session and file id)."""
        with self._lock:
            client, size = self._pending.pop(token, ("unknown", 0))
            record = Spooled(token, path, size, session_id, file_id, client, self._clock())
            old = self._by_upload.get((session_id, file_id))
            self._by_token[token] = record
            self._by_upload[(session_id, file_id)] = token
            stale = self._by_token.pop(old, None) if old else None
        if stale is not None:
            stale.path.unlink(missing_ok=True)
        return record

    def discard(self, session_id: str, file_id: str | None = None) -> None:
        """Removes a session's upload ``file_id``, or all of its uploads."""
        with self._lock:
            keys = [k for k in self._by_upload if k[0] == session_id and (file_id is None or k[1] == file_id)]
            gone = [self._by_token.pop(self._by_upload.pop(k), None) for k in keys]
        for record in gone:
            if record is not None:
                record.path.unlink(missing_ok=True)

    def connected(self, session_id: str) -> None:
        """A connection of ``session_id`` is open (its uploads stay)."""
        with self._lock:
            self._gone.pop(session_id, None)

    def disconnected(self, session_id: str) -> None:
        """The connection of ``session_id`` closed: its uploads go once Streamlit can no longer resume it."""
        with self._lock:
            self._gone[session_id] = self._clock()

    def sweep(self, grace_s: float) -> None:
        """Removes the uploads of sessions disconnected over ``grace_s`` ago (``server.disconnectedSessionTTL``).

        Streamlit forgets such a session without telling its upload manager, so :meth:`watch` alone would keep them.
        """
        now = self._clock()
        with self._lock:
            gone = [sid for sid, t in self._gone.items() if now - t > grace_s]
            for sid in gone:
                del self._gone[sid]
        for sid in gone:
            self.discard(sid)

    def _expire(self) -> None:
        now = self._clock()
        with self._lock:
            old = [r for r in self._by_token.values() if now - r.created > self._ttl]
        for r in old:
            self.discard(r.session_id, r.file_id)

    def resolve(self, data: bytes, session_id: str | None) -> Path | None:
        """The file a stand-in names, when it was uploaded to ``session_id`` and is still there; else None."""
        if not data.startswith(SPOOL_MARK) or len(data) > len(SPOOL_MARK) + 64 or not session_id:
            return None
        token = data[len(SPOOL_MARK) :].decode("ascii", "replace")
        with self._lock:
            record = self._by_token.get(token)
        if record is None or record.session_id != session_id or not record.path.is_file():
            return None
        return record.path

    def watch(self, manager: Any) -> None:
        """Follows Streamlit's upload manager: an upload it forgets (removed, session closed) leaves the disk."""
        if id(manager) in self._watched:
            return
        self._watched.add(id(manager))
        remove_file, remove_session_files = manager.remove_file, manager.remove_session_files

        def removed_file(session_id: str, file_id: str) -> None:
            remove_file(session_id, file_id)
            self.discard(session_id, file_id)

        def removed_session(session_id: str) -> None:
            remove_session_files(session_id)
            self.discard(session_id)

        manager.remove_file, manager.remove_session_files = removed_file, removed_session


def _spool_suffix(filename: str) -> str:
    suffix = os.path.splitext(filename.replace("\\", "/").rsplit("/", 1)[-1])[1].lower()
    return suffix if len(suffix) <= 9 and suffix[1:].isalnum() and suffix[1:].isascii() else ""


def upload_content(uploaded: Any) -> bytes | Path:
    """What a Streamlit ``UploadedFile`` holds: the spooled file's path behind the guard, else its bytes.

    Every page that takes an upload reads it through this (or :func:`upload_bytes`): behind the guard Streamlit holds
    only a stand-in, and the file is read from disk by the session it was uploaded to, never another.
    """
    data = uploaded.getvalue()
    g = active()
    if g is not None and data.startswith(SPOOL_MARK):
        from streamlit.runtime.scriptrunner import get_script_run_ctx

        ctx = get_script_run_ctx()
        path = g.spool.resolve(data, ctx.session_id if ctx is not None else None)
        if path is not None:
            return path
    return bytes(data)


def client_key() -> str:
    """Who this script run's work is counted against: the client address behind the guard, else the session.

    The guard sets ``X-Forwarded-For`` of every request to the client address it decided on (:func:`client_address`),
    so a client opening more sessions or tabs shares one budget (the hourly pixel budget, wrong codes).
    """
    import streamlit as st
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    if active() is not None:
        address = st.context.headers.get("X-Forwarded-For")
        if address:
            return f"client:{address}"
    ctx = get_script_run_ctx()
    return f"session:{ctx.session_id if ctx is not None else ''}"


def upload_bytes(uploaded: Any) -> bytes:
    """The bytes of a Streamlit ``UploadedFile`` (read from the spool behind the guard; small files: CSVs, weights)."""
    content = upload_content(uploaded)
    return content if isinstance(content, bytes) else content.read_bytes()


# ------------------------------------------------------------------------------------------------- the guard


def is_media_path(path: str) -> bool:
    """Whether a request is for Streamlit's media route (private: the app's images, crops and downloads).

    The app's own static files (``/static/media/``: the text and icon fonts) are public: refusing them to a browser
    that has not signed in yet drew every icon as its name ("add_a_photo") on the first page. A path with ``..``
    counts as media, whatever it says.
    """
    before, found, _ = path.partition(MEDIA_PATH)
    return bool(found) and (not before.endswith("/static") or ".." in path)


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
        trusted_proxies: Peer addresses (or networks) whose ``X-Forwarded-For`` counts when ``proxy_hops`` > 0.
        allowed_hosts: Host header names served (``*.example.org`` for subdomains); empty: any.
        sessions: Which browser each Streamlit session belongs to.
        max_connections_per_client: Open websocket connections per client address.
        max_runs_per_client: Script runs in flight per client address (one more rerun waits).
        rerun_rate: Reruns per connection.
        message_rate: Websocket messages per connection.
        spool: Uploads on disk (bounded per client address and in all).
    """

    signer: CookieSigner
    grants: GrantStore = field(default_factory=GrantStore)
    max_upload_bytes: int = 200 * 1024 * 1024
    cross_site: bool = False
    proxy_hops: int = 0
    limiter: RateLimiter = field(default_factory=RateLimiter)
    trusted_proxies: tuple[str, ...] = ("127.0.0.1/8", "::1")
    allowed_hosts: tuple[str, ...] = ()
    sessions: SessionOwners = field(default_factory=SessionOwners)
    max_connections_per_client: int = 60
    max_runs_per_client: int = 6
    rerun_rate: Rate = RERUN_RATE
    message_rate: Rate = MESSAGE_RATE
    slots: ClientSlots = field(default_factory=ClientSlots)
    upstream_rewrites: bool = False
    renewals: dict[str, tuple[str, str, float]] = field(default_factory=dict)
    live: dict[str, Any] = field(default_factory=dict)
    spool: UploadSpool = field(default_factory=UploadSpool)

    def browser_of(self, session_id: str | None, cookie_value: str | None) -> str | None:
        """The browser id a script run acts for: its session's (renewed at sign-in), else its connection cookie's."""
        bound, bid = self.sessions.owner(session_id)
        return bid if bound else self.signer.verify(cookie_value)

    def sign_in(self, bid: str, session_id: str | None, grant: Any) -> str:
        """Binds ``grant`` to browser ``bid``: every sign-in (an access code, a login) goes through here.

        Returns the one-time token of the cookie renewal the app then shows (:data:`RENEW_PATH`), so that a cookie
        known before the sign-in is worth nothing after it; '' without a session to show it in.
        """
        self.grants.put(bid, grant)
        return self.ask_renewal(bid, session_id) if session_id else ""

    def ask_renewal(self, bid: str, session_id: str) -> str:
        """A one-time token that swaps ``bid``'s cookie for a new one (fetched by the browser of ``session_id``)."""
        now = time.monotonic()
        for token in [t for t, (_, _, exp) in self.renewals.items() if exp < now]:
            self.renewals.pop(token, None)
        token = secrets.token_urlsafe(24)
        self.renewals[token] = (bid, session_id, now + RENEW_TTL_S)
        return token

    def renewed(self, token: str) -> bool:
        """Whether the renewal of ``token`` has happened (or expired)."""
        return token not in self.renewals


_state: GuardState | None = None
TEST_GRANTS = GrantStore()
"""Grants of AppTest sessions (no server, no network, no cookie): bound to the session, as nothing else exists."""


def install(state: GuardState | None) -> GuardState | None:
    """Makes ``state`` the process's guard (:mod:`webapp.serve` does, once; None: no guard)."""
    global _state
    _state = state
    return state


def active() -> GuardState | None:
    """The guard serving this process, None when the app runs without it (``streamlit run webapp/app.py``).

    Also None inside Streamlit's AppTest (``global.appTest``): an AppTest run has no server, no connection and no
    cookie, so a guard installed in the same process (a test that imported :mod:`webapp.serve`) serves none of its
    runs; were it consulted, every AppTest run would read as signed out and lose its state.
    """
    if _state is None:
        return None
    from streamlit import config

    if config.get_option("global.appTest"):
        return None
    return _state


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}


def _in_networks(address: str, networks: tuple[str, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    for net in networks:
        try:
            if ip in ipaddress.ip_network(net, strict=False):
                return True
        except ValueError:
            continue
    return False


def uvicorn_trusted() -> tuple[str, ...]:
    """The peers whose ``X-Forwarded-For`` uvicorn itself applies to ``scope["client"]`` (``FORWARDED_ALLOW_IPS``)."""
    return forwarded_allow_ips()


def client_address(
    scope: Scope,
    proxy_hops: int,
    trusted_proxies: tuple[str, ...] = ("127.0.0.1/8", "::1"),
    upstream_rewrites: bool = False,
) -> str:
    """The client's address: the peer's, or an ``X-Forwarded-For`` entry when the peer is a trusted proxy.

    The entry is the one ``proxy_hops`` from the right, used only when the peer is one of ``trusted_proxies``.

    ``upstream_rewrites``: uvicorn may have replaced the peer by an ``X-Forwarded-For`` entry (its default for
    loopback peers, when :func:`webapp.serve.harden_uvicorn` could not turn it off); such an address (one of the
    header's entries) is replaced by the peer uvicorn trusted, and the header is not used further.
    """
    peer = str((scope.get("client") or ("unknown", 0))[0])
    chain = [p.strip() for p in _headers(scope).get("x-forwarded-for", "").split(",") if p.strip()]
    if upstream_rewrites and chain and peer in chain:
        trusted = [t for t in uvicorn_trusted() if t != "*"]
        return trusted[0] if trusted else "unknown-proxy"
    if proxy_hops <= 0 or not _in_networks(peer, trusted_proxies):
        return peer
    return chain[-proxy_hops] if len(chain) >= proxy_hops else peer


def host_allowed(host: str | None, allowed: tuple[str, ...]) -> bool:
    """Whether a Host header names this server (``allowed`` empty: any; ``*.x.org`` matches subdomains)."""
    if not allowed:
        return True
    if not host:
        return False
    name = host.strip().lower()
    if name.startswith("["):
        name = name[1:].partition("]")[0]
    elif name.count(":") == 1:
        name = name.partition(":")[0]
    name = name.rstrip(".")
    for pattern in allowed:
        p = pattern.strip().lower().rstrip(".")
        if p == "*" or name == p or (p.startswith("*.") and name.endswith(p[1:])):
            return True
    return False


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
        client = client_address(scope, state.proxy_hops, state.trusted_proxies, state.upstream_rewrites)
        headers = [(k, v) for k, v in scope.get("headers") or [] if k.lower() != b"x-forwarded-for"]
        scope = dict(scope, headers=[*headers, (b"x-forwarded-for", client.encode())])
        if not host_allowed(_headers(scope).get("host"), state.allowed_hosts):
            log.warning("request for unknown host %r from %s refused", _headers(scope).get("host", "")[:100], client)
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
            else:
                await _answer(send, 421, "Unknown host: this server answers for its own name only.")
            return
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
        if path.rstrip("/").endswith(RENEW_PATH):
            await self._renew(state, scope, send, client, bid)
            return
        upload = UPLOAD_PATH in path
        if not state.limiter.allow(client, "upload" if upload else "http"):
            log.warning("rate limit: %s requests from %s refused", "upload" if upload else "page", client)
            await _answer(send, 429, "Too many requests: wait a minute and try again.", [(b"retry-after", b"60")])
            return
        if is_media_path(path) and not signed_in:
            log.warning("media request refused: client %s is not signed in", client)
            await _answer(send, 403, "Sign in first (access code or login).")
            return
        has_body = scope.get("method") in ("POST", "PUT", "PATCH", "DELETE")
        if upload and has_body and not signed_in:
            log.warning("upload refused: client %s is not signed in", client)
            await _answer(send, 403, "Sign in first (access code or login), then upload.")
            return
        session_id = file_id = ""
        if upload:
            session_id, _, file_id = path.split(UPLOAD_PATH, 1)[1].partition("/")
            file_id = file_id.strip("/")
            if not state.sessions.belongs(session_id, bid):
                log.warning("upload to a session of another browser refused (client %s)", client)
                await _answer(send, 403, "This upload belongs to another browser's session.")
                return
        limit = state.max_upload_bytes + MAX_BODY if upload else MAX_BODY  # multipart headers on top of the file
        length = _headers(scope).get("content-length", "")
        if length.isdigit() and int(length) > limit:
            await _answer(send, 413, f"Too large: at most {state.max_upload_bytes // (1024 * 1024)} MB per file.")
            return
        seen = 0

        async def bounded_receive() -> Message:
            nonlocal seen
            try:
                message = await asyncio.wait_for(receive(), BODY_TIMEOUT_S)
            except TimeoutError:
                raise BodyTimeoutError from None
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
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"server"]
                if bid is None and not upload:
                    cookie = cookie_header(state.signer.issue(), cross_site=state.cross_site)
                    kept.append((b"set-cookie", cookie.encode()))
                message = dict(message, headers=kept)
            await send(message)

        try:
            content_type = _headers(scope).get("content-type", "").lower()
            if upload and scope.get("method") == "PUT" and content_type.startswith("multipart/form-data"):
                await self._spool_upload(
                    state, scope, bounded_receive, receive, send_with_cookie, client, session_id, file_id
                )
            else:
                await self.app(scope, bounded_receive if has_body else receive, send_with_cookie)
        except BodyTooLargeError:
            log.warning("request body over %d bytes from %s refused", limit, client)
            if not started:
                await _answer(send, 413, f"Too large: at most {state.max_upload_bytes // (1024 * 1024)} MB per file.")
        except BodyTimeoutError:
            log.warning("request body from %s stalled over %.0f s: refused", client, BODY_TIMEOUT_S)
            if not started:
                await _answer(send, 408, "The request body stalled; send it again.")

    async def _spool_upload(
        self,
        state: GuardState,
        scope: Scope,
        receive: Receive,
        raw_receive: Receive,
        send: Send,
        client: str,
        session_id: str,
        file_id: str,
    ) -> None:
        """Writes an upload's file to the spool as it arrives; Streamlit gets a stand-in (:class:`UploadSpool`).

        Memory per upload is one received chunk; the file is bounded by the upload limit (the caller's
        ``receive``), the client's share and the spool's total (507 once over either).
        """
        from python_multipart.multipart import MultipartParser, parse_options_header

        spool = state.spool
        _watch_streamlit_uploads(spool)
        headers = _headers(scope)
        _, params = parse_options_header(headers.get("content-type", ""))
        boundary = params.get(b"boundary")
        length = headers.get("content-length", "")
        if not boundary:
            await _answer(send, 400, "A file upload is a multipart form with a boundary.")
            return
        full = spool.room(client, int(length) if length.isdigit() else 0)
        if full is not None:
            log.warning("upload from %s refused: %s", client, full)
            await _answer(send, 507, f"No room for this upload: {full}. Remove uploaded files, then try again.")
            return
        part = _FilePart()
        parser = MultipartParser(boundary, part.callbacks())
        token, spooled, fh = "", None, None
        try:
            while True:
                message = await receive()
                if message.get("type") != "http.request":
                    raise ConnectionAbortedError("client went away")
                part.feed(parser, message.get("body") or b"")
                if part.error is None and part.filename is not None and fh is None:
                    token, spooled = spool.begin(client, _spool_suffix(part.filename))
                    fh = spooled.open("wb")
                if part.error is None and part.chunks and fh is not None:
                    chunks, part.chunks = part.chunks, []
                    await asyncio.to_thread(fh.writelines, chunks)
                    part.error = spool.grow(token, sum(len(c) for c in chunks))
                    if part.error is not None:
                        log.warning("upload from %s refused: %s", client, part.error)
                        await _answer(send, 507, f"No room for this upload: {part.error}.")
                        raise ConnectionAbortedError(part.error)
                if part.error is not None or not message.get("more_body", False):
                    break
            if part.error is None:
                parser.finalize()
                part.check_done()
            if part.error is not None or spooled is None:
                await _answer(send, 400, f"Not a file upload: {part.error or 'no file in the form'}.")
                raise ConnectionAbortedError("bad form")
            assert fh is not None
            fh.close()
        except BaseException:
            if fh is not None:
                fh.close()
            if spooled is not None:
                spool.abandon(token, spooled)
            if isinstance(sys.exc_info()[1], ConnectionAbortedError):
                return
            raise
        boundary_out = secrets.token_hex(16).encode()
        stand_in = (
            b"--"
            + boundary_out
            + b"\r\n"
            + b"".join(name + b": " + value + b"\r\n" for name, value in part.headers)
            + b"\r\n"
            + SPOOL_MARK
            + token.encode()
            + b"\r\n--"
            + boundary_out
            + b"--\r\n"
        )
        kept = [
            (k, v)
            for k, v in scope.get("headers") or []
            if k.lower() not in (b"content-type", b"content-length", b"transfer-encoding")
        ]
        inner = dict(
            scope,
            headers=[
                *kept,
                (b"content-type", b"multipart/form-data; boundary=" + boundary_out),
                (b"content-length", str(len(stand_in)).encode()),
            ],
        )
        given = False

        async def receive_stand_in() -> Message:
            nonlocal given
            if given:
                return await raw_receive()
            given = True
            return {"type": "http.request", "body": stand_in, "more_body": False}

        stored = False

        async def watch(message: Message) -> None:
            nonlocal stored
            if message.get("type") == "http.response.start" and 200 <= int(message.get("status", 500)) < 300:
                spool.finish(token, spooled, session_id, file_id)
                stored = True
            await send(message)

        try:
            await self.app(inner, receive_stand_in, watch)
        finally:
            if not stored:
                spool.abandon(token, spooled)

    async def _renew(self, state: GuardState, scope: Scope, send: Send, client: str, bid: str | None) -> None:
        """Swaps a just-signed-in browser's cookie for a fresh one (no session fixation).

        The grant moves to a new browser id, the session and its open connection follow, and the old id is worth
        nothing afterwards: a cookie planted in the browser before sign-in stays signed out.
        """
        from urllib.parse import parse_qs

        token = (parse_qs((scope.get("query_string") or b"").decode("latin-1")).get("t") or [""])[0]
        pending = state.renewals.pop(token, None) if token else None
        if pending is None or bid is None or pending[0] != bid or pending[2] < time.monotonic():
            log.warning("cookie renewal refused for client %s", client)
            await _answer(send, 404, "Not found.")
            return
        old, session_id, _ = pending
        value = state.signer.issue()
        new = state.signer.verify(value)
        assert new is not None
        grant = state.grants.get(old)
        if grant is not None:
            state.grants.put(new, grant)
        state.grants.revoke(old)
        state.sessions.rebind(session_id, new)
        conn = state.live.get(session_id)
        if conn is not None and conn.bid == old:
            conn.bid = new
        cookie = cookie_header(value, cross_site=state.cross_site)
        headers = [
            (b"content-type", b"image/gif"),
            (b"content-length", str(len(_PIXEL)).encode()),
            (b"cache-control", b"no-store"),
            (b"set-cookie", cookie.encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": _PIXEL})

    async def _websocket(self, state: GuardState, scope: Scope, receive: Receive, send: Send, client: str) -> None:
        if not state.limiter.allow(client, "ws"):
            log.warning("rate limit: websocket connection from %s refused", client)
            await send({"type": "websocket.close", "code": 1008})
            return
        slots = state.slots
        if slots.connections.get(client, 0) >= state.max_connections_per_client:
            log.warning("websocket from %s refused: %d open already", client, state.max_connections_per_client)
            await send({"type": "websocket.close", "code": 1008})
            return
        from streamlit.proto.BackMsg_pb2 import BackMsg
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        bid = _bid_of(state, scope)  # the cookie of this connection's handshake: fixed for its lifetime
        scope = _without_foreign_session(state, scope, bid, client)
        conn = _Connection(state.rerun_rate, state.message_rate, bid)

        async def filtered_receive() -> Message:
            while True:
                message = await receive()
                if message.get("type") != "websocket.receive":
                    return message
                data = message.get("bytes") or b""
                if len(data) > MAX_WS_MESSAGE or message.get("text"):
                    log.warning("websocket message of %d bytes from %s: connection closed", len(data), client)
                    return {"type": "websocket.disconnect", "code": 1009}
                back = BackMsg()
                try:
                    back.ParseFromString(data)
                except Exception:  # Streamlit closes the connection on it; let it
                    return message
                kind = back.WhichOneof("type")
                if not conn.allow(kind):
                    conn.dropped += 1
                    if conn.dropped in (1, 10, 100) or conn.dropped % 1000 == 0:
                        log.warning("dropped %d messages from %s over the message rate", conn.dropped, client)
                    if conn.dropped >= FLOOD_CLOSE_AFTER:
                        log.warning("websocket of %s closed: it keeps flooding", client)
                        return {"type": "websocket.disconnect", "code": 1008}
                    continue
                signed_in = state.grants.get(conn.bid) is not None
                reason = _refusal(back, kind, signed_in)
                if reason is not None:
                    log.warning("dropped a %r message from %s (%s)", kind, client, reason)
                    continue
                conn.dropped = 0
                if kind == "rerun_script" and not signed_in:
                    kept = [w for w in back.rerun_script.widget_states.widgets if _sign_in_widget(w.id)]
                    if len(kept) != len(back.rerun_script.widget_states.widgets):
                        del back.rerun_script.widget_states.widgets[:]
                        back.rerun_script.widget_states.widgets.extend(kept)
                        message = dict(message, bytes=back.SerializeToString())
                if kind == "rerun_script" and not conn.running:
                    waited = 0.0
                    while slots.running.get(client, 0) >= state.max_runs_per_client and waited < 60:
                        await asyncio.sleep(0.05)  # this client's other runs first; its socket waits, no one else
                        waited += 0.05
                    conn.running = True
                    slots._add(slots.running, client, 1)
                return message

        async def watched_send(message: Message) -> None:
            data = message.get("bytes") if message.get("type") == "websocket.send" else None
            if data and len(data) <= MAX_PARSED_REPLY:
                fwd = ForwardMsg()
                try:
                    fwd.ParseFromString(data)
                    kind = fwd.WhichOneof("type")
                except Exception:
                    kind = None
                if kind == "new_session":
                    sid = fwd.new_session.initialize.session_id
                    if sid:
                        state.sessions.bind(sid, conn.bid)
                        conn.sid = sid
                        state.live[sid] = conn
                        state.spool.connected(sid)
                    env = fwd.new_session.initialize.environment_info
                    env.streamlit_version, env.python_version, env.server_os = "", "", ""
                    message = dict(message, bytes=fwd.SerializeToString())
                elif kind == "script_finished" and conn.running:
                    conn.running = False
                    slots._add(slots.running, client, -1)
            await send(message)

        slots._add(slots.connections, client, 1)
        try:
            await self.app(scope, filtered_receive, watched_send)
        finally:
            if conn.sid and state.live.get(conn.sid) is conn:
                del state.live[conn.sid]
                state.spool.disconnected(conn.sid)
                grace = _session_ttl_s() + 1
                asyncio.get_running_loop().call_later(grace, state.spool.sweep, grace - 1)
            slots._add(slots.connections, client, -1)
            if conn.running:
                slots._add(slots.running, client, -1)


class _HeaderTimeout:
    """Mixin of uvicorn's HTTP protocol (h11 or httptools): a request's headers must be complete within a bound.

    uvicorn bounds the idle time between keep-alive requests but not the headers themselves: a client sending them a
    byte at a time (slowloris) holds its connection open for ever. The timer starts when the connection opens and
    again at the first byte of a keep-alive request, and stops once the headers are parsed (a new request cycle, or a
    websocket upgrade); if it runs out first the client gets 408 and the connection is closed.
    """

    header_timeout_s = HEADER_TIMEOUT_S
    _header_timer: asyncio.TimerHandle | None = None
    _last_cycle: Any = None
    transport: Any
    cycle: Any
    loop: Any
    client: Any

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._arm_header_timer()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)  # type: ignore[misc]
        if self._waiting_for_headers():
            if self._header_timer is None:
                self._arm_header_timer()
        else:
            self._cancel_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)  # type: ignore[misc]

    def _waiting_for_headers(self) -> bool:
        cycle = self.cycle
        return cycle is None or cycle is self._last_cycle or bool(getattr(cycle, "response_complete", False))

    def _arm_header_timer(self) -> None:
        self._last_cycle = self.cycle
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_timed_out)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_timed_out(self) -> None:
        self._header_timer = None
        transport = self.transport
        if transport.is_closing() or transport.get_protocol() is not self or not self._waiting_for_headers():
            return  # closed, upgraded to a websocket, or its headers came
        log.warning(
            "request headers from %s incomplete after %.0f s: connection closed",
            (self.client or ("unknown",))[0],
            self.header_timeout_s,
        )
        transport.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        transport.close()


def with_header_timeout(protocol_class: type) -> type:
    """Uvicorn's HTTP protocol class with :class:`_HeaderTimeout` in front (:func:`webapp.serve.harden_uvicorn`)."""
    if issubclass(protocol_class, _HeaderTimeout):
        return protocol_class
    return type(f"HeaderTimeout{protocol_class.__name__}", (_HeaderTimeout, protocol_class), {})


class _FilePart:
    """Reads the one file of a multipart upload form as it streams: its part headers, and its data in chunks."""

    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.filename: str | None = None
        self.chunks: list[bytes] = []
        self.error: str | None = None
        self._field, self._value = b"", b""
        self._part_headers: list[tuple[bytes, bytes]] = []
        self._in_file = False
        self._header_bytes = 0
        self._other_bytes = 0
        self._files = 0

    def callbacks(self) -> Any:
        return {
            "on_part_begin": self._begin,
            "on_part_data": self._data,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_done,
        }

    def feed(self, parser: Any, body: bytes) -> None:
        """Gives the parser one chunk of the body; a malformed form sets :attr:`error`."""
        if self.error is not None:
            return
        try:
            parser.write(body)
        except Exception as exc:  # python_multipart's parse errors
            self.error = f"malformed multipart form ({type(exc).__name__})"

    def check_done(self) -> None:
        """Sets :attr:`error` unless the form held exactly one file."""
        if self.error is None and self._files != 1:
            self.error = f"{self._files} files in the form, not 1"

    def _begin(self) -> None:
        self._part_headers, self._in_file = [], False

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
        self._value += data[start:end]

    def _count_header(self, n: int) -> None:
        self._header_bytes += n
        if self._header_bytes > MAX_PART_HEADERS:
            raise ValueError("part headers too long")

    def _header_end(self) -> None:
        self._part_headers.append((self._field, self._value))
        self._field, self._value = b"", b""

    def _headers_done(self) -> None:
        from python_multipart.multipart import parse_options_header

        disposition = next((v for k, v in self._part_headers if k.lower() == b"content-disposition"), b"")
        _, options = parse_options_header(disposition)
        if b"filename" not in options:
            return
        self._files += 1
        if self._files > 1:
            raise ValueError("more than one file")
        self._in_file = True
        self.headers = list(self._part_headers)
        self.filename = options[b"filename"].decode("utf-8", "replace")

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file:
            self.chunks.append(data[start:end])
        else:
            self._other_bytes += end - start
            if self._other_bytes > MAX_BODY:
                raise ValueError("form fields too long")


def _session_ttl_s() -> float:
    """Seconds Streamlit keeps a disconnected session for a reconnect (``server.disconnectedSessionTTL``)."""
    try:
        from streamlit import config

        return float(config.get_option("server.disconnectedSessionTTL"))
    except Exception:
        return 120.0


def _watch_streamlit_uploads(spool: UploadSpool) -> None:
    """Lets the spool follow the running Streamlit's upload manager (once)."""
    try:
        from streamlit.runtime import Runtime

        spool.watch(Runtime.instance().uploaded_file_mgr)
    except Exception as exc:  # no runtime (a test of the guard alone): files go by their age and at exit
        log.debug("uploads not followed: %s", exc)


class BodyTimeoutError(Exception):
    """A request body stalled past :data:`BODY_TIMEOUT_S`; the guard answers 408."""


class _Connection:
    """One websocket's rate buckets and whether a script run it asked for is in flight."""

    def __init__(self, rerun_rate: Rate, message_rate: Rate, bid: str | None = None) -> None:
        self.reruns, self.messages = Bucket(rerun_rate), Bucket(message_rate)
        self.bid = bid  # the handshake cookie's browser id, or the one it was renewed to
        self.sid = ""
        self.running = False
        self.dropped = 0

    def allow(self, kind: str | None) -> bool:
        if not self.messages.take():
            return False
        return kind != "rerun_script" or self.reruns.take()


def _sign_in_widget(widget_id: str) -> bool:
    """Whether a widget id is one of the sign-in widgets (ids end with ``-<key>`` when a key is given)."""
    return any(widget_id.endswith("-" + key) for key in SIGNED_OUT_WIDGET_KEYS)


def _refusal(back: Any, kind: str | None, signed_in: bool) -> str | None:
    """Why a browser message is dropped, None when it goes through."""
    if kind in DROPPED_MESSAGES:
        return "never from a browser"
    if signed_in:
        return None
    if kind not in SIGNED_OUT_MESSAGES:
        return "not signed in"
    if kind == "rerun_script" and back.rerun_script.fragment_id:
        return "a fragment rerun while not signed in"
    return None


def _without_foreign_session(state: GuardState, scope: Scope, bid: str | None, client: str) -> Scope:
    """The scope without a session id to resume unless that session was opened by this browser id."""
    headers = scope.get("headers") or []
    raw = next((v for k, v in headers if k.lower() == b"sec-websocket-protocol"), None)
    if raw is None:
        return scope
    entries = [e.strip() for e in raw.decode("latin-1").split(",")]
    if len(entries) < 3 or not entries[2]:
        return scope
    if state.sessions.belongs(entries[2], bid):
        return scope
    log.warning("client %s asked to resume a session of another browser: it gets a new session", client)
    value = ", ".join(entries[:2]).encode("latin-1")
    kept = [(k, v) for k, v in headers if k.lower() != b"sec-websocket-protocol"]
    return dict(scope, headers=[*kept, (b"sec-websocket-protocol", value)])


def _bid_of(state: GuardState, scope: Scope) -> str | None:
    """The browser id of a connection (re-read per message: a sign-in after the connection opened counts)."""
    return state.signer.verify(cookie_from_header(_headers(scope).get("cookie")))
