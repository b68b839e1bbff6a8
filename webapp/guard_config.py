"""The guard's state from the settings, without side effects (:mod:`webapp.serve` installs it; tests build it).

Importing :mod:`webapp.serve` installs a process-wide guard and hardens uvicorn; these functions do neither, so a test
(or a tool) can ask what the guard would be for some settings without turning every later in-process app run into a
guarded one.
"""

from __future__ import annotations

from pathlib import Path

from core.settings import Settings
from webapp import guard


def _csv(value: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in value.split(",") if p.strip())


def allowed_hosts(s: Settings, server_address: str | None) -> tuple[str, ...]:
    """Host names served: the configured ones; else loopback names on a loopback address; else any (empty)."""
    from webapp.access import is_loopback

    if s.allowed_hosts:
        return (*_csv(s.allowed_hosts), *(guard.LOOPBACK_HOSTS if is_loopback(server_address) else ()))
    if is_loopback(server_address):
        return guard.LOOPBACK_HOSTS
    return ()


def guard_state(s: Settings, server_address: str | None = "127.0.0.1") -> guard.GuardState:
    """The guard's state for the settings (cookie secret, upload limit, iframe cookies, proxies, hosts, spool)."""
    import secrets

    secret = s.cookie_secret.encode() if s.cookie_secret else secrets.token_bytes(32)
    # On a Space the container is reachable only through Hugging Face's proxy, whose addresses are not published:
    # every peer is that proxy there. Elsewhere only loopback, unless configured.
    proxies = _csv(s.trusted_proxies) or (("0.0.0.0/0", "::/0") if s.hosted else ("127.0.0.1/8", "::1"))
    return guard.GuardState(
        signer=guard.CookieSigner(secret),
        max_upload_bytes=s.max_upload_mb * 1024 * 1024,
        cross_site=s.hosted,
        proxy_hops=s.proxy_hops,
        trusted_proxies=proxies,
        allowed_hosts=allowed_hosts(s, server_address),
        spool=guard.UploadSpool(
            max_total_bytes=guard.SPOOL_TOTAL_UPLOADS * s.max_upload_mb * 1024 * 1024,
            max_client_bytes=guard.SPOOL_CLIENT_UPLOADS * s.max_upload_mb * 1024 * 1024,
            root=Path(s.data_dir) / "upload-spool",
        ),
    )
