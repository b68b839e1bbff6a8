"""Who may see and change which study: sign-in mode, annotator allowlists, owners. No streamlit here.

Modes, first match wins:

1. ``oidc``: the secrets have an ``[auth]`` section (``.streamlit/secrets.toml`` or the Space's secrets): Streamlit's
   own OpenID Connect login (``st.login``), e.g. Hugging Face OAuth. The annotator's identity is the login's email
   (or name), never a text field.
2. ``code``: an access code is set (``AFFECTLAB_ACCESS_CODE`` or ``access_code`` in the secrets): a small study's
   shared password. Annotators then type their name; it must be on the study's allowlist when one is set.
3. ``local``: neither, and the server listens on a loopback address: one person's machine, everything allowed.
4. ``closed``: neither, but the server is reachable from elsewhere (``server.address`` not loopback, or running in
   a Hugging Face Space): nothing is shown until sign-in is configured (or ``AFFECTLAB_ALLOW_OPEN=1`` says the
   network is trusted).

Allowlists and owners (environment, or the same names lower-case under ``[access]`` in the secrets):

- ``AFFECTLAB_ANNOTATORS``: who may annotate. ``alice@x.org,bob@y.org`` for every study, or per study
  ``pilot=alice@x.org,bob@y.org;main=carol@z.org`` (``*=`` for every study). Empty: everyone signed in.
- ``AFFECTLAB_OWNERS``: who may export and delete, same format. Owners may annotate too.
- ``AFFECTLAB_OWNER_CODE``: in ``code`` mode, a second code that makes a session an owner.
- ``AFFECTLAB_STUDY``: the study a new session starts in (default ``default``).
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from affectlab.settings import Settings

Mode = Literal["oidc", "code", "local", "closed"]
ALL = "*"
DEFAULT_STUDY = "default"


def parse_people(value: str | Mapping[str, Any] | None) -> dict[str, frozenset[str]]:
    """Parses an allowlist: ``a,b`` (every study) or ``study=a,b;other=c``, or a mapping study -> list.

    Returns:
        Study name (``*`` for every study) to lower-cased names.
    """
    out: dict[str, set[str]] = {}
    if value is None:
        return {}
    if isinstance(value, Mapping):
        items = [(str(k), v if isinstance(v, str) else ",".join(map(str, v))) for k, v in value.items()]
    else:
        items = []
        for part in str(value).split(";"):
            if not part.strip():
                continue
            study, sep, names = part.partition("=")
            items.append((study.strip(), names) if sep else (ALL, study))
    for study, names in items:
        people = {n.strip().lower() for n in names.split(",") if n.strip()}
        if people:
            out.setdefault(study or ALL, set()).update(people)
    return {k: frozenset(v) for k, v in out.items()}


def is_loopback(address: str | None) -> bool:
    """Whether a server address only accepts connections from this machine."""
    if not address:  # Streamlit's default binds every interface
        return False
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class AccessConfig:
    """The deployment's access rules.

    Attributes:
        mode: See the module docstring.
        access_code: The study access code (``code`` mode).
        owner_code: The owners' code (``code`` mode).
        annotators: Allowlist of annotators per study (``*``: every study); empty: no restriction.
        owners: Owners per study (``*``: every study).
        default_study: The study a new session starts in.
        reason: Why the mode is ``closed``.
    """

    mode: Mode
    access_code: str | None = None
    owner_code: str | None = None
    annotators: dict[str, frozenset[str]] = field(default_factory=dict)
    owners: dict[str, frozenset[str]] = field(default_factory=dict)
    default_study: str = DEFAULT_STUDY
    reason: str = ""

    def _people(self, table: dict[str, frozenset[str]], study: str | None) -> frozenset[str]:
        return table.get(ALL, frozenset()) | (table.get(study, frozenset()) if study else frozenset())

    def may_annotate(self, who: str | None, study: str | None) -> bool:
        """Whether ``who`` may see and annotate ``study`` (owners may)."""
        if self.mode == "local":
            return True
        if self.mode == "closed" or not who:
            return False
        if not self.annotators:
            return True
        w = who.strip().lower()
        return w in self._people(self.annotators, study) or w in self._people(self.owners, study)

    def may_enter(self, who: str | None) -> bool:
        """Whether ``who`` is on some study's list (or no list restricts it)."""
        if self.mode == "local":
            return True
        if self.mode == "closed" or not who:
            return False
        if not self.annotators:
            return True
        w = who.strip().lower()
        return any(w in people for people in (*self.annotators.values(), *self.owners.values()))

    def is_owner(self, who: str | None, study: str | None, *, owner_code_ok: bool = False) -> bool:
        """Whether ``who`` may export and delete in ``study``."""
        if self.mode == "local":
            return True
        if self.mode == "code" and owner_code_ok:
            return True
        if self.mode != "oidc" or not who:
            return False  # in code mode a typed name proves nothing: owners need the owners' code
        return who.strip().lower() in self._people(self.owners, study)

    def check_code(self, code: str | None, *, owner: bool = False) -> bool:
        """Whether ``code`` is the access (or owners') code, compared in constant time."""
        expected = self.owner_code if owner else self.access_code
        if not expected or not code:
            return False
        return hmac.compare_digest(code.encode(), expected.encode())


def _secret(secrets: Mapping[str, Any], *path: str) -> Any:
    node: Any = secrets
    for key in path:
        try:
            if key not in node:
                return None
            node = node[key]
        except Exception:  # st.secrets without a secrets file
            return None
    return node


def load_access_config(
    settings: Settings, secrets: Mapping[str, Any], server_address: str | None
) -> AccessConfig:
    """Reads the access rules from the settings, the secrets and the server's listening address.

    Args:
        settings: The runtime settings (``Settings.from_env()``).
        secrets: ``st.secrets`` (or a dict in tests).
        server_address: ``st.get_option("server.address")``.
    """
    has_auth = _secret(secrets, "auth") is not None
    code = settings.access_code or _secret(secrets, "access_code") or None
    owner_code = settings.owner_code or _secret(secrets, "owner_code") or None
    annotators = parse_people(settings.annotators or _secret(secrets, "access", "annotators"))
    owners = parse_people(settings.owners or _secret(secrets, "access", "owners"))
    study = settings.study or DEFAULT_STUDY
    common = {"annotators": annotators, "owners": owners, "default_study": study}
    if has_auth:
        return AccessConfig(mode="oidc", **common)
    if code:
        return AccessConfig(mode="code", access_code=str(code), owner_code=str(owner_code) if owner_code else None,
                            **common)  # fmt: skip
    hosted = settings.hosted
    open_ok = settings.allow_open
    if (hosted or not is_loopback(server_address)) and not open_ok:
        where = "a Hugging Face Space" if hosted else f"address {server_address or '0.0.0.0 (every interface)'}"
        return AccessConfig(mode="closed", reason=f"the app is reachable from other machines ({where}) and no "
                            "sign-in is configured", **common)  # fmt: skip
    return AccessConfig(mode="local", **common)
