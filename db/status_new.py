"""The read model of new, unjudged faces written by a few set-based statements (PostgreSQL; :mod:`db.status`).

A stretch of a video stores a few thousand faces nobody has judged, skipped or seen yet: their rows are what
:func:`db.status_write.write_faces` gives a face from its prediction alone. That function answers any face by some
ten statements per chunk of 500 ids (reading old rows, judges and tallies that new faces do not have) and builds each
row in Python, ~1.5 ms a face on PostgreSQL, most of a scale fill. Here the same rows are one ``INSERT ... SELECT``
over the stretch's ids (one array parameter), the queue counts one grouped read of what it inserted, and nothing
else: a new face has no judges, tallies or old counts to take out.

It applies only where that is exactly so: every id is a face with no read-model row, judge, tally, annotation
(its own or its track's) or skip, and every class of its predictions is in the study's kept classes; otherwise it
declines and :func:`db.status_write.write_faces` does the work. The values are the Python rules' (``route`` the same
sha256 of :func:`db.queues.route_value`, computed in SQL), which ``tests/test_status_new.py`` checks row for row.
"""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import text
from sqlalchemy.orm import Session

from db.queues import NEGATIVE_CLASSES, POSITIVE_CLASSES, VALENCE_CONTRADICTION
from db.schema import StudyStatus
from db.status_counts import CountKey, CountVec, apply_counts

ENABLED = True
"""Set to False (tests, benches) to write every face through :func:`db.status_write.write_faces`."""

_BUSY = text(
    """
    SELECT (SELECT count(*) FROM faces WHERE id = ANY(:ids)),
           EXISTS (SELECT 1 FROM face_status WHERE face_id = ANY(:ids))
        OR EXISTS (SELECT 1 FROM face_judges WHERE face_id = ANY(:ids))
        OR EXISTS (SELECT 1 FROM face_tallies WHERE face_id = ANY(:ids))
        OR EXISTS (SELECT 1 FROM annotations WHERE face_id = ANY(:ids))
        OR EXISTS (SELECT 1 FROM review_skips WHERE face_id = ANY(:ids))
        OR EXISTS (SELECT 1 FROM annotations a JOIN faces f ON f.track_id = a.track_id WHERE f.id = ANY(:ids)),
           ARRAY(SELECT DISTINCT k FROM predictions p, json_object_keys(p.probs) AS k WHERE p.face_id = ANY(:ids))
    """
)

# route: sha256("affectlab-route:<study>:<face>")'s first 8 bytes as an unsigned integer / 2^64, as two exact
# halves (each float8 product is exact, their sum rounded once: the correctly rounded quotient Python computes)
_ROUTE = """(
    ('x' || encode(substring(h.d FROM 1 FOR 4), 'hex'))::bit(32)::bigint::float8
        * CAST('2.3283064365386963e-10' AS float8)
  + ('x' || encode(substring(h.d FROM 5 FOR 4), 'hex'))::bit(32)::bigint::float8
        * CAST('5.421010862427522e-20' AS float8)
)"""

_INSERT = text(
    f"""
    INSERT INTO face_status (face_id, study_id, media_id, track_id, route, model_label, model_confidence, u_key,
                             human_label, n_votes, n_judges, v_key, d_key)
    SELECT f.id, :sid, f.media_id, f.track_id, {_ROUTE}, p.label, p.confidence,
           COALESCE(-(CAST(1 AS float8) - p.confidence), CAST('-0' AS float8)),
           NULL, 0, 0,
           CASE WHEN p.valence IS NOT NULL AND ((p.label = ANY(:pos) AND p.valence < -:vc)
                                            OR (p.label = ANY(:neg) AND p.valence > :vc))
                THEN -abs(p.valence) END,
           NULL
    FROM faces f
    CROSS JOIN LATERAL (
        SELECT sha256(convert_to('affectlab-route:' || :sid || ':' || f.id, 'UTF8')) AS d
    ) h
    LEFT JOIN LATERAL (
        SELECT q.label, q.confidence, q.valence FROM predictions q WHERE q.face_id = f.id
        ORDER BY (q.model = :m AND q.weights_hash = :w AND q.model_version IS NOT DISTINCT FROM :v) DESC, q.id DESC
        LIMIT 1
    ) p ON TRUE
    WHERE f.id = ANY(:ids)
    """
)

_COUNTS = text(
    """
    SELECT media_id, COALESCE(model_label, ''), count(*), count(v_key)
    FROM face_status WHERE face_id = ANY(:ids) GROUP BY 1, 2
    """
)


def write_new(session: Session, study_id: int, face_ids: Collection[int], *, counts: bool) -> bool:
    """Writes the read model of new, unjudged faces of a study in a few statements; False where it does not apply.

    ``counts``: the study's queue counts move by the new rows (False: the caller recounts the study).
    """
    if not ENABLED or not face_ids or session.get_bind().dialect.name != "postgresql":
        return False
    ids = sorted(int(i) for i in face_ids)
    n, busy, keys = session.execute(_BUSY, {"ids": ids}).one()
    kept = session.get(StudyStatus, study_id)
    if n != len(ids) or busy or kept is None or not set(keys or []) <= set(kept.classes or []):
        return False
    model, weights, version = (kept.model, kept.weights_hash or "", kept.model_version) if kept.model else (None,) * 3
    params = {
        "ids": ids,
        "sid": study_id,
        "m": model,
        "w": weights,
        "v": version,
        "pos": sorted(POSITIVE_CLASSES),
        "neg": sorted(NEGATIVE_CLASSES),
        "vc": VALENCE_CONTRADICTION,
    }
    session.execute(_INSERT, params)
    if counts:
        delta: dict[CountKey, CountVec] = {}
        for mid, label, faces, valence in session.execute(_COUNTS, {"ids": ids}):
            # a face nobody voted on is in the uncertainty queue whatever its route (n_votes 0 < 1 or 2)
            delta[(0, int(mid), str(label), "")] = [int(faces), int(faces), int(valence), 0, 0]
        apply_counts(session, study_id, delta)
    return True
