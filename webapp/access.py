"""Who may see and change which study: sign-in mode, annotator allowlists, owners. No streamlit here.

Modes, first match wins:

1. ``oidc``: the secrets have an ``[auth]`` section (``.streamlit/secrets.toml`` or the Space's secrets): Streamlit's
   own OpenID Connect login (``st.login``), e.g. Hugging Face OAuth. The annotator's identity is the login's email
   (or name), never a text field.
2. ``code``: access codes are set (``AFFECTLAB_ACCESS_CODE`` and/or ``AFFECTLAB_STUDY_CODES``, or ``access_code`` /
   ``study_codes`` in the secrets): a small study's shared password. What a browser may see is what the codes it
   entered open (:class:`CodeGrant`), bound to its signed cookie (:mod:`webapp.guard`), never to session state. A
   typed name proves nothing, so a per-study allowlist needs that study's own code (else the app refuses to start).
3. ``local``: neither, and the server listens on a loopback address: one person's machine, everything allowed.
4. ``closed``: neither, but the server is reachable from elsewhere (``server.address`` not loopback, or running in
   a Hugging Face Space): nothing is shown until sign-in is configured (or ``AFFECTLAB_ALLOW_OPEN=1`` says the
   network is trusted).

Allowlists and owners (environment, or the same names lower-case under ``[access]`` in the secrets):

- ``AFFECTLAB_ANNOTATORS``: who may annotate. ``alice@x.org,bob@y.org`` for every study, or per study
  ``pilot=alice@x.org,bob@y.org;main=carol@z.org`` (``*=`` for every study). Empty: everyone signed in.
- ``AFFECTLAB_OWNERS``: who may export and delete, same format. Owners may annotate too.
- ``AFFECTLAB_OWNER_CODE``: in ``code`` mode, a second code that makes a browser owner of every study.
- ``AFFECTLAB_STUDY_CODES`` / ``AFFECTLAB_STUDY_OWNER_CODES``: ``pilot=code1;main=code2``: a study with its own code is
  seen only with that code (or its owners' code, or the global owners' code); the global access code opens the
  other studies.
- ``AFFECTLAB_STUDY``: the study a new session starts in (default ``default``).
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from core.settings import Settings

log = logging.getLogger("affectlab.access")

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


def parse_codes(value: str | Mapping[str, Any] | None) -> dict[str, str]:
    """Parses per-study codes: ``study=code;other=code2`` (or a mapping study -> code). Empty codes are dropped."""
    if not value:
        return {}
    if isinstance(value, Mapping):
        pairs = [(str(k), str(v)) for k, v in value.items()]
    else:
        pairs = [part.partition("=")[::2] for part in str(value).split(";") if "=" in part]
    return {study.strip(): code.strip() for study, code in pairs if study.strip() and code.strip()}


@dataclass(frozen=True)
class CodeGrant:
    """What the codes a browser entered open (``code`` mode).

    Attributes:
        see: Studies it may see and annotate; ``*``: every study without its own code.
        own: Studies it owns (exports, deletions, rules, weights); ``*``: every study.
    """

    see: frozenset[str] = frozenset()
    own: frozenset[str] = frozenset()

    def merge(self, other: CodeGrant | None) -> CodeGrant:
        """Both grants together (a second code adds to the first)."""
        if other is None:
            return self
        return CodeGrant(see=self.see | other.see, own=self.own | other.own)


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
        study_codes: Per-study access codes (``code`` mode).
        study_owner_codes: Per-study owners' codes (``code`` mode).
        refusal: Why the app must not serve this configuration (shown and logged), "" when it may.
    """

    mode: Mode
    access_code: str | None = None
    owner_code: str | None = None
    study_codes: dict[str, str] = field(default_factory=dict, repr=False)
    study_owner_codes: dict[str, str] = field(default_factory=dict, repr=False)
    annotators: dict[str, frozenset[str]] = field(default_factory=dict)
    owners: dict[str, frozenset[str]] = field(default_factory=dict)
    default_study: str = DEFAULT_STUDY
    reason: str = ""
    refusal: str = ""

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

    def is_global_owner(self, who: str | None, grant: CodeGrant | None) -> bool:
        """Whether the caller may manage what serves every study (model weights, fine-tuned versions).

        Local use; the global owners' code (``code`` mode); a login on the ``*=`` owners list (``oidc``). The owner
        of one study is not one.
        """
        if self.mode == "local":
            return True
        if self.mode == "code":
            return grant is not None and ALL in grant.own
        if self.mode != "oidc" or not who:
            return False
        return who.strip().lower() in self.owners.get(ALL, frozenset())

    def coded(self, study: str | None) -> bool:
        """Whether ``study`` has its own code (the global access code then does not open it)."""
        return bool(study) and (study in self.study_codes or study in self.study_owner_codes)

    def grant_for(self, code: str | None) -> CodeGrant | None:
        """What ``code`` opens, None when it is no code of this deployment (every code compared in constant time)."""
        if not code:
            return None
        got = CodeGrant()
        found = False
        table: list[tuple[str | None, CodeGrant]] = [
            (self.access_code, CodeGrant(see=frozenset({ALL}))),
            (self.owner_code, CodeGrant(see=frozenset({ALL}), own=frozenset({ALL}))),
            *((c, CodeGrant(see=frozenset({s}))) for s, c in self.study_codes.items()),
            *((c, CodeGrant(see=frozenset({s}), own=frozenset({s}))) for s, c in self.study_owner_codes.items()),
        ]
        for expected, grant in table:
            if expected and hmac.compare_digest(code.encode(), expected.encode()):
                got, found = got.merge(grant), True
        return got if found else None

    def may_see(self, grant: CodeGrant | None, study: str | None) -> bool:
        """In ``code`` mode: whether a browser holding ``grant`` may see ``study`` at all."""
        if grant is None or not study:
            return False
        if study in grant.see or study in grant.own or ALL in grant.own:
            return True
        return ALL in grant.see and not self.coded(study)

    def owns(self, grant: CodeGrant | None, study: str | None) -> bool:
        """In ``code`` mode: whether ``grant`` makes its holder an owner of ``study``."""
        return grant is not None and bool(study) and (ALL in grant.own or study in grant.own)

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


def load_access_config(settings: Settings, secrets: Mapping[str, Any], server_address: str | None) -> AccessConfig:
    """Reads the access rules from the settings, the secrets and the server's listening address.

    Args:
        settings: The runtime settings (``Settings.from_env()``).
        secrets: ``st.secrets`` (or a dict in tests).
        server_address: ``st.get_option("server.address")``.
    """
    has_auth = _secret(secrets, "auth") is not None
    code = settings.access_code or _secret(secrets, "access_code") or None
    owner_code = settings.owner_code or _secret(secrets, "owner_code") or None
    study_codes = parse_codes(settings.study_codes or _secret(secrets, "study_codes"))
    study_owner_codes = parse_codes(settings.study_owner_codes or _secret(secrets, "study_owner_codes"))
    annotators = parse_people(settings.annotators or _secret(secrets, "access", "annotators"))
    owners = parse_people(settings.owners or _secret(secrets, "access", "owners"))
    study = settings.study or DEFAULT_STUDY
    if has_auth:
        return AccessConfig(mode="oidc", annotators=annotators, owners=owners, default_study=study)
    if code or study_codes or study_owner_codes:
        coded = set(study_codes) | set(study_owner_codes)
        listed = sorted({s for table in (annotators, owners) for s in table if s != ALL and s not in coded})
        refusal = ""
        if listed:
            refusal = (
                f"the allowlists name studies ({', '.join(listed)}) that have no code of their own. With "
                "access codes a typed name proves nothing, so anyone with the access code would see them. "
                "Give each such study its own code (AFFECTLAB_STUDY_CODES='study=code;...', and "
                "AFFECTLAB_STUDY_OWNER_CODES for its owners), or use OpenID Connect sign-in (an [auth] "
                "section in the secrets)"
            )
        return AccessConfig(
            mode="code",
            access_code=str(code) if code else None,
            owner_code=str(owner_code) if owner_code else None,
            study_codes=study_codes,
            study_owner_codes=study_owner_codes,
            refusal=refusal,
            annotators=annotators,
            owners=owners,
            default_study=study,
        )
    hosted = settings.hosted
    open_ok = settings.allow_open
    if (hosted or not is_loopback(server_address)) and not open_ok:
        where = "a Hugging Face Space" if hosted else f"address {server_address or '0.0.0.0 (every interface)'}"
        return AccessConfig(
            mode="closed",
            reason=f"the app is reachable from other machines ({where}) and no sign-in is configured",
            annotators=annotators,
            owners=owners,
            default_study=study,
        )
    return AccessConfig(mode="local", annotators=annotators, owners=owners, default_study=study)


CodeKind = Literal["access", "owner", "study access", "study owner"]
"""Kinds of codes: the global access code, the global owners' code, a study's access code, a study's owners' code."""
CODE_KINDS: tuple[CodeKind, ...] = ("access", "owner", "study access", "study owner")


def code_kinds(access: AccessConfig) -> tuple[CodeKind, ...]:
    """The kinds of codes the deployment has."""
    present = {
        "access": bool(access.access_code),
        "owner": bool(access.owner_code),
        "study access": bool(access.study_codes),
        "study owner": bool(access.study_owner_codes),
    }
    return tuple(k for k in CODE_KINDS if present[k])


def kinds_of(access: AccessConfig, code: str | None) -> tuple[CodeKind, ...]:
    """The kinds of the deployment's codes that ``code`` is (compared in constant time; empty: a wrong code)."""
    if not code:
        return ()
    tables: list[tuple[CodeKind, list[str | None]]] = [
        ("access", [access.access_code]),
        ("owner", [access.owner_code]),
        ("study access", list(access.study_codes.values())),
        ("study owner", list(access.study_owner_codes.values())),
    ]
    found = []
    for kind, expected in tables:
        hits = [bool(e) and hmac.compare_digest(code.encode(), e.encode()) for e in expected if e]
        if any(hits):
            found.append(kind)
    return tuple(found)


def kinds_still_closed(access: AccessConfig, grant: CodeGrant | None) -> tuple[CodeKind, ...]:
    """The kinds a browser holding ``grant`` may still be guessing.

    A global code it holds is no longer one of them; the per-study kinds always are (another study's code opens more).
    """
    held: set[CodeKind] = set()
    if grant is not None:
        if ALL in grant.own:
            held |= {"owner", "access"}
        if ALL in grant.see:
            held.add("access")
    return tuple(k for k in code_kinds(access) if k not in held)


class CodeThrottle:
    """A growing wait after wrong codes, per client address and per code kind.

    ``free`` typos, then 1 s, doubling up to ``cap_s``.
    A wrong code is a failed guess at every kind the browser does not hold yet (:func:`kinds_still_closed`), so it
    counts against each of them; a try waits for the longest of their waits. A right code clears the count of its
    own kind only: an annotator's own code never resets its guesses at the owners' code. Clients are keyed by
    address (the guard's ``X-Forwarded-For``) or, without one, by browser; a count is forgotten ``forget_s`` after
    its last failure.
    """

    def __init__(
        self,
        base_s: float = 1.0,
        cap_s: float = 300.0,
        forget_s: float = 3600.0,
        free: int = 2,
        max_clients: int = 20_000,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.free = free
        self.base_s, self.cap_s, self.forget_s, self._max, self._clock = base_s, cap_s, forget_s, max_clients, clock
        self._failures: OrderedDict[tuple[str, str], tuple[int, float]] = OrderedDict()
        self._lock = threading.Lock()

    def delay(self, failures: int) -> float:
        """The wait after ``failures`` wrong codes in a row."""
        return 0.0 if failures <= self.free else min(self.cap_s, self.base_s * 2 ** (failures - self.free - 1))

    def _left(self, key: tuple[str, str]) -> float:
        n, last = self._failures.get(key, (0, 0.0))
        if n and self._clock() - last > self.forget_s:
            del self._failures[key]
            return 0.0
        return max(0.0, last + self.delay(n) - self._clock()) if n else 0.0

    def wait_left(self, client: str, kinds: tuple[str, ...] = CODE_KINDS) -> float:
        """Seconds ``client`` must still wait before its next try at any of ``kinds`` (0: it may try now)."""
        with self._lock:
            return max((self._left((client, k)) for k in kinds), default=0.0)

    def count(self, client: str, kind: str) -> int:
        """Wrong codes of ``client`` counted against ``kind``."""
        with self._lock:
            return self._failures.get((client, kind), (0, 0.0))[0]

    def failed(self, client: str, kinds: tuple[str, ...] = CODE_KINDS, what: str = "access code") -> float:
        """Counts a wrong code of ``client`` against each of ``kinds`` and logs it (never the code).

        Returns the wait now imposed (the longest of the kinds').
        """
        worst = 0
        with self._lock:
            for kind in kinds:
                n = self._failures.get((client, kind), (0, 0.0))[0] + 1
                self._failures[(client, kind)] = (n, self._clock())
                self._failures.move_to_end((client, kind))
                worst = max(worst, n)
            while len(self._failures) > self._max:
                self._failures.popitem(last=False)
        wait = self.delay(worst)
        log.warning("wrong %s from client %s (failure %d in a row; next try in %.0f s)", what, client, worst, wait)
        return wait

    def succeeded(self, client: str, kinds: tuple[str, ...]) -> None:
        """Clears ``client``'s counts of the ``kinds`` its right code is (and of no other kind)."""
        with self._lock:
            for kind in kinds:
                self._failures.pop((client, kind), None)


THROTTLE = CodeThrottle()
"""The process's wrong-code throttle (every session of the server shares it)."""
