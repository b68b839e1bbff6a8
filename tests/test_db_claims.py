"""Analysis claims (SQLite and PostgreSQL): one run per file at a time; a dead owner's claim is taken over."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, update

from db.claims import Claimant, ClaimBusyError, ClaimLostError
from db.codecs import sha256_bytes
from db.ingest import MediaInfo
from db.schema import AnalysisClaim, Face
from tests.pg import fake_results, png_bytes

INFO = MediaInfo(kind="video", width=320, height=240, duration_s=4.0, fps=10.0)


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _claims(store) -> list[tuple[str, str]]:
    return store.transaction(lambda s: [(c.sha256, c.owner) for c in s.scalars(select(AnalysisClaim))], write=False)


def _chunk(frame: int) -> list[object]:
    return fake_results("v.mp4", [(10.0, 10.0, 50.0, 60.0)], ["Happiness"], frames=[frame], tracks=[None], seed=frame)


def test_a_live_claim_makes_a_second_run_busy_and_is_released(store) -> None:
    data = png_bytes(1)
    sha = sha256_bytes(data)
    a, b = Claimant.here(), Claimant.here()
    assert a.owner != b.owner, "two runs of one process are told apart"
    assert store.ingest.claim("s", sha, a) is None
    assert store.ingest.claim("s", sha, a) is None, "the holder may claim again"
    with pytest.raises(ClaimBusyError, match=r"being analysed by another run \(process \d+ on "):
        store.ingest.claim("s", sha, b)
    store.ingest.release_claim("s", sha, b)  # not the holder: nothing happens
    assert _claims(store) == [(sha, a.owner)]
    store.ingest.ingest_results("s", data, "a.png", [], claimant=a)
    assert _claims(store) == [], "the storing transaction releases the claim"
    (media,) = store.recordings.media("s")
    assert store.ingest.claim("s", sha, b) == media, "complete: nothing to claim, the stored item is returned"
    assert _claims(store) == []


def test_a_dead_owners_claim_is_taken_over_and_the_old_owner_stores_nothing(store) -> None:
    data = png_bytes(2)
    sha = sha256_bytes(data)
    here = Claimant.here()
    dead = Claimant(host=here.host, pid=_dead_pid(), token="gone")
    state = store.ingest.begin_video("s", data, "v.mp4", INFO, claimant=dead)
    assert state.status == "partial" and _claims(store) == [(sha, dead.owner)]
    store.ingest.store_chunk(state.media_id, _chunk(0), until_s=0.0, until_frame=0, samples=1, claimant=dead)

    # Its process is gone on this host: the next run takes over and resumes.
    resumed = store.ingest.begin_video("s", data, "v.mp4", INFO, claimant=here)
    assert resumed.media_id == state.media_id and resumed.until_frame == 0
    assert _claims(store) == [(sha, here.owner)]
    with pytest.raises(ClaimLostError, match="another run took this file over"):
        store.ingest.store_chunk(state.media_id, _chunk(1), until_s=0.1, until_frame=1, samples=2, claimant=dead)
    with pytest.raises(ClaimLostError):
        store.ingest.heartbeat("s", sha, dead)
    n = store.transaction(lambda s: s.scalar(select(func.count()).select_from(Face)), write=False)
    assert n == 1, "the old owner's late chunk was not stored"

    # Another host's owner that stopped beating is taken over too; a live one on another host is not.
    other = Claimant(host="elsewhere", pid=1, token="far")
    store.transaction(
        lambda s: s.execute(update(AnalysisClaim).values(owner=other.owner, host=other.host, pid=other.pid))
    )
    with pytest.raises(ClaimBusyError, match="process 1 on elsewhere"):
        store.ingest.begin_video("s", data, "v.mp4", INFO, claimant=here)
    old = datetime.now(UTC) - timedelta(minutes=10)
    store.transaction(lambda s: s.execute(update(AnalysisClaim).values(heartbeat_at=old)))
    store.ingest.begin_video("s", data, "v.mp4", INFO, claimant=here)
    store.ingest.store_chunk(state.media_id, _chunk(1), until_s=0.1, until_frame=1, samples=2, claimant=here)
    store.ingest.finish_video(state.media_id, {}, [], duration_s=4.0, fps=10.0, width=320, height=240, claimant=here)
    assert _claims(store) == [] and store.recordings.media("s")[0].analysis_status == "complete"
    again = store.ingest.begin_video("s", data, "v.mp4", INFO, claimant=other)
    assert again.status == "complete" and _claims(store) == [], "a complete item is not claimed"
