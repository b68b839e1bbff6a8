"""AffectLab behind its guard: ``streamlit run webapp/serve.py`` (``make run`` and the Docker image use it).

The same app as ``webapp/app.py``, served as an ASGI app (``st.App``) whose first middleware is
:class:`webapp.guard.Guard`: sign-in cookie, upload bounds, rate limits, no public metrics, no "clear cache" from
browsers. Settings: ``AFFECTLAB_MAX_UPLOAD_MB``, ``AFFECTLAB_COOKIE_SECRET``, ``AFFECTLAB_PROXY_HOPS`` (see
:mod:`affectlab.settings`). Pass ``--server.maxUploadSize`` with the same number of MB (the Makefile and
``docker_start.sh`` do); the guard enforces its own limit either way.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st
from starlette.middleware import Middleware

from affectlab.settings import Settings
from webapp import guard


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
app = st.App(str(Path(__file__).with_name("app.py")), middleware=[Middleware(guard.Guard)])

if __name__ == "__main__":
    app.run()
