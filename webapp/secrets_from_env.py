"""Writes Streamlit's ``[auth]`` secrets from a Hugging Face Space's OAuth variables (run by docker_start.sh).

A Space whose README front matter says ``hf_oauth: true`` receives ``OAUTH_CLIENT_ID``, ``OAUTH_CLIENT_SECRET``,
``OPENID_PROVIDER_URL`` and ``SPACE_HOST`` as environment variables, while ``st.login`` reads its provider from
``.streamlit/secrets.toml``. This module bridges the two; it changes nothing when those variables are absent or a
secrets file with an ``[auth]`` section exists already. The cookie secret comes from ``AFFECTLAB_COOKIE_SECRET``, or
a random one per start (signing everyone out on restart).

Usage: ``python -m webapp.secrets_from_env [SECRETS_FILE]`` (default ``$HOME/.streamlit/secrets.toml``).
"""

from __future__ import annotations

import json
import secrets
import sys
from collections.abc import Mapping
from pathlib import Path

from core.settings import environment


def auth_section(env: Mapping[str, str]) -> str | None:
    """The ``[auth]`` TOML section for the Space's OAuth app, None when the Space has no OAuth variables."""
    client_id, client_secret = env.get("OAUTH_CLIENT_ID"), env.get("OAUTH_CLIENT_SECRET")
    provider, host = env.get("OPENID_PROVIDER_URL"), env.get("SPACE_HOST")
    if not (client_id and client_secret and provider and host):
        return None
    values = {
        "redirect_uri": f"https://{host}/oauth2callback",
        "cookie_secret": env.get("AFFECTLAB_COOKIE_SECRET") or secrets.token_urlsafe(32),
        "client_id": client_id,
        "client_secret": client_secret,
        "server_metadata_url": f"{provider.rstrip('/')}/.well-known/openid-configuration",
    }
    lines = ["[auth]", *(f"{k} = {json.dumps(v)}" for k, v in values.items())]
    scope = env.get("OAUTH_SCOPES") or "openid profile"  # what the Space's hf_oauth_scopes granted
    lines.append(f"client_kwargs = {{ scope = {json.dumps(scope)} }}")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    """Writes the secrets file when the Space has OAuth variables; returns the exit status."""
    target = Path(argv[0]) if argv else Path.home() / ".streamlit" / "secrets.toml"
    section = auth_section(environment())
    if section is None:
        return 0
    if target.exists() and "[auth]" in target.read_text(encoding="utf-8"):
        return 0
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("a", encoding="utf-8") as f:
        f.write(section)
    target.chmod(0o600)
    print(f"sign-in with Hugging Face configured in {target}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
