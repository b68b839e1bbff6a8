"""AffectLab behind its guard: ``streamlit run webapp/serve.py`` (``make run`` and the Docker image use it).

The same app as ``webapp/app.py``, served as an ASGI app (``st.App``) whose first middleware is
:class:`webapp.guard.Guard`: sign-in cookie, sessions bound to browsers, upload and message bounds, rate limits,
no public metrics, no "clear cache" from browsers. Settings: ``AFFECTLAB_MAX_UPLOAD_MB``,
``AFFECTLAB_COOKIE_SECRET``, ``AFFECTLAB_PROXY_HOPS``, ``AFFECTLAB_TRUSTED_PROXIES``, ``AFFECTLAB_ALLOWED_HOSTS``
(see :mod:`core.settings`). Pass ``--server.maxUploadSize`` with the same number of MB (the Makefile and
``docker_start.sh`` do); the guard enforces its own limit either way.

uvicorn is hardened while it imports this module (:func:`harden_uvicorn`): it no longer rewrites the client address
from ``X-Forwarded-For`` (the guard decides whose header counts), a websocket frame over
:data:`webapp.guard.MAX_WS_MESSAGE` is refused from its length before it is buffered, request headers are capped at
16 KB, request headers must be complete within :data:`webapp.guard.HEADER_TIMEOUT_S` (slowloris), and the
``Server: uvicorn`` header is gone.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from types import FrameType
from typing import Any

import streamlit as st
from starlette.middleware import Middleware
from streamlit import config as st_config

from core.settings import Settings
from webapp import guard
from webapp.guard_config import guard_state

log = logging.getLogger("affectlab.serve")


def harden_uvicorn() -> bool:
    """Adjusts the uvicorn ``Config`` that is importing this module; False when there is none (not under uvicorn)."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        cfg: Any = frame.f_locals.get("self")
        if cfg is not None and type(cfg).__name__ == "Config" and type(cfg).__module__ == "uvicorn.config":
            cfg.proxy_headers = False
            cfg.ws_max_size = guard.MAX_WS_MESSAGE
            cfg.h11_max_incomplete_event_size = 16 * 1024
            cfg.server_header = False
            cfg.http_protocol_class = guard.with_header_timeout(cfg.http_protocol_class)
            cfg.encoded_headers = [(k, v) for k, v in cfg.encoded_headers if k != b"server"]
            return True
        frame = frame.f_back
    return False


# One script thread per session: a rerun asked for during a run stops it at its next checkpoint instead of starting
# another thread beside it (Streamlit's fastReruns); a burst of reruns then costs one thread, not one each.
st_config.set_option("runner.fastReruns", False)
_state = guard_state(Settings.from_env(), st.get_option("server.address"))
guard.install(_state)
if not harden_uvicorn():
    _state.upstream_rewrites = True
    log.warning("webapp/serve.py was not imported by uvicorn: its X-Forwarded-For and frame-size settings stay")
app = st.App(str(Path(__file__).with_name("app.py")), middleware=[Middleware(guard.Guard)])

if __name__ == "__main__":
    app.run()
