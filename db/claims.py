"""Analysis claims: one analysis per media item at a time, whichever process, machine or page asks.

A run that is about to analyse a file takes a claim on the file's bytes in the study (a row of ``analysis_claims``,
unique per study and sha256, with the run's owner id and a heartbeat) in the same write transaction that creates or
resumes the media item (:func:`db.resumable.begin_video`; for a still, :meth:`db.service_ingest.Ingest.claim`). Every
later write of the run checks in its own transaction that it still holds the claim (:func:`check`), and the
transaction that completes the media item deletes it (:func:`release`). So two runs never store the same faces:
the second finds the claim held and waits or skips (:class:`ClaimBusyError`), or takes the claim over when its
owner died (its process is gone on this host, or its heartbeat is older than :data:`STALE_S`); the owner that was
taken over then finds the claim lost (:class:`ClaimLostError`) and stores nothing more.

Deciding is serialised per file: SQLite write transactions run one at a time (``BEGIN IMMEDIATE``), and on
PostgreSQL :func:`take` first takes a transaction-scoped advisory lock on the study and hash, so two runs that find no
claim cannot both insert one. Functions take the caller's session and never commit.
"""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from db.errors import StoreError
from db.schema import AnalysisClaim

STALE_S = 120.0
"""Seconds without a heartbeat after which a claim's owner counts as dead (it beats every :data:`HEARTBEAT_S`)."""

HEARTBEAT_S = 10.0
"""Seconds between two heartbeats of a run holding a claim."""


@dataclass(frozen=True)
class Claimant:
    """A run that claims files: its host, process and a token of its own (two runs of one process differ).

    Attributes:
        host: The host name.
        pid: The process id.
        token: Random, one per run.
    """

    host: str
    pid: int
    token: str

    @classmethod
    def here(cls) -> Claimant:
        """A new claimant for a run of this process."""
        return cls(host=socket.gethostname()[:100], pid=os.getpid(), token=secrets.token_hex(8))

    @property
    def owner(self) -> str:
        """The owner id stored in the claim row."""
        return f"{self.host}:{self.pid}:{self.token}"


class ClaimBusyError(StoreError):
    """Another live run is analysing the same bytes into the study."""

    def __init__(self, host: str, pid: int, seen_s: float) -> None:
        super().__init__(
            f"being analysed by another run (process {pid} on {host}, last seen {seen_s:.0f} s ago); "
            "analyse it again once that run ends: a stopped run is resumed, a finished one shown"
        )
        self.host, self.pid, self.seen_s = host, pid, seen_s


class ClaimLostError(StoreError):
    """This run's claim was taken over (it was thought dead) or removed: it must store nothing more."""

    def __init__(self) -> None:
        super().__init__(
            "another run took this file over (this run was silent too long); nothing more was stored by this run: "
            "analyse it again to resume it once no other run works on it"
        )


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=UTC)  # SQLite returns naive UTC times


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _lock(session: Session, study_id: int, sha256: str) -> None:
    """On PostgreSQL: an advisory lock on (study, hash) until the transaction ends. SQLite needs none."""
    if session.get_bind().dialect.name != "postgresql":
        return
    key = int.from_bytes(bytes.fromhex(sha256[:16]), "big", signed=True) ^ study_id
    session.execute(select(func.pg_advisory_xact_lock(key)))


def _row(session: Session, study_id: int, sha256: str) -> AnalysisClaim | None:
    return session.scalar(
        select(AnalysisClaim).where(AnalysisClaim.study_id == study_id, AnalysisClaim.sha256 == sha256)
    )


def holder_dead(row: AnalysisClaim, now: datetime, stale_s: float = STALE_S) -> bool:
    """Whether a claim's owner is gone: its process is not running on this host, or it stopped beating."""
    if row.host == socket.gethostname()[:100] and not pid_alive(row.pid):
        return True
    return now - _aware(row.heartbeat_at) > timedelta(seconds=stale_s)


def take(session: Session, study_id: int, sha256: str, claimant: Claimant, *, now: datetime | None = None) -> bool:
    """Claims the bytes ``sha256`` in the study for ``claimant``.

    Returns:
        True when a dead owner's claim was taken over, False for a new claim (or one this claimant held already).

    Raises:
        ClaimBusyError: Another live run holds the claim.
    """
    now = now or datetime.now(UTC)
    _lock(session, study_id, sha256)
    row = _row(session, study_id, sha256)
    if row is None:
        session.add(
            AnalysisClaim(
                study_id=study_id,
                sha256=sha256,
                owner=claimant.owner,
                host=claimant.host,
                pid=claimant.pid,
                claimed_at=now,
                heartbeat_at=now,
            )
        )
        session.flush()
        return False
    if row.owner == claimant.owner:
        row.heartbeat_at = now
        return False
    if not holder_dead(row, now):
        raise ClaimBusyError(row.host, row.pid, (now - _aware(row.heartbeat_at)).total_seconds())
    row.owner, row.host, row.pid = claimant.owner, claimant.host, claimant.pid
    row.claimed_at = row.heartbeat_at = now
    session.flush()
    return True


def check(session: Session, study_id: int, sha256: str, claimant: Claimant) -> None:
    """Checks that ``claimant`` still holds the claim (and beats its heartbeat).

    Raises:
        ClaimLostError: The claim was taken over or removed.
    """
    row = _row(session, study_id, sha256)
    if row is None or row.owner != claimant.owner:
        raise ClaimLostError()
    row.heartbeat_at = datetime.now(UTC)


def release(session: Session, study_id: int, sha256: str, claimant: Claimant) -> None:
    """Deletes the claim when ``claimant`` holds it (a claim taken over by another run stays)."""
    session.execute(
        delete(AnalysisClaim).where(
            AnalysisClaim.study_id == study_id,
            AnalysisClaim.sha256 == sha256,
            AnalysisClaim.owner == claimant.owner,
        )
    )
