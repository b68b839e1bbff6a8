"""AffectLab behind its guard: ``streamlit run webapp/serve.py`` (``make run`` and the Docker image use it).

The same app as ``webapp/app.py``, served as an ASGI app (``st.App``) whose first middleware is
:class:`webapp.guard.Guard`: sign-in cookie, upload bounds, rate limits, no public metrics, no "clear cache" from
browsers. Settings: ``AFFECTLAB_MAX_UPLOAD_MB``, ``AFFECTLAB_COOKIE_SECRET``, ``AFFECTLAB_PROXY_HOPS`` (see
:mod:`affectlab.settings`). Pass ``--server.maxUploadSize`` with the same number of MB (the Makefile and
``docker_start.sh`` do); the guard enforces its own limit either way.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402
from starlette.middleware import Middleware  # noqa: E402

from affectlab.settings import Settings  # noqa: E402
from webapp import guard  # noqa: E402


def guard_state(s: Settings) -> guard.GuardState:
    """The guard's state for the settings (cookie secret, upload limit, iframe cookies, trusted proxies)."""
    import secrets

    secret = s.cookie_secret.encode() if s.cookie_secret else secrets.token_bytes(32)
    return guard.GuardState(
        signer=guard.CookieSigner(secret),
        max_upload_bytes=s.max_upload_mb * 1024 * 1024,
        cross_site=s.hosted,
        proxy_hops=s.proxy_hops,
    )


guard.install(guard_state(Settings.from_env()))
app = st.App(str(ROOT / "webapp" / "app.py"), middleware=[Middleware(guard.Guard)])

if __name__ == "__main__":
    app.run()
