"""Visible shares from the real timestamps of the analysed frames, exact at 23.976, 25, 29.97 fps and variable rates.

Each recording is 20 s sampled at 5 fps the way :mod:`models.decode` samples (the first decoded frame of each
1/5 s slot). Student A is seen in every sampled frame before 10 s; student B from 5 s to 12 s and from 14 s to the
end; nobody between 12 s and 14 s. By hand: A's face stands for the time from 0 to the first sampled frame at or
after 10 s; B's for [first >= 5, last < 12] plus one step, and [first >= 14, last < 20] plus one step (a frame before
a gap, and the last frame, stand for one step: the mean of the recording's steps).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from db import classroom
from db.ingest import MediaInfo
from tests.pg import fake_results, png_bytes, tracks_of

DURATION = 20.0
SAMPLE_FPS = 5.0


def _decoded(rate: float | None, seed: int = 0) -> list[float]:
    """Decoded frame times of a 20 s video: constant ``rate``, or variable (None: steps of 1/40 to 1/15 s)."""
    if rate is not None:
        return [n / rate for n in range(int(DURATION * rate) + 1) if n / rate < DURATION]
    rng = np.random.default_rng(seed)
    steps = rng.uniform(1 / 40, 1 / 15, 2000)
    t = np.concatenate([[0.0], np.cumsum(steps)])
    return [float(x) for x in t if x < DURATION]


def _sampled(decoded: list[float]) -> list[float]:
    """The sampled frames (models.decode: the first frame of each 1/SAMPLE_FPS slot)."""
    out, last = [], -1
    for t in decoded:
        slot = int(np.floor(t * SAMPLE_FPS + 1e-6))
        if slot > last:
            out.append(t)
            last = slot
    return out


def _ingest(store, times: list[float], study: str) -> int:
    plan = []  # (track, person, time)
    for t in times:
        if t < 10:
            plan.append((0, 0, t))
        if 5 <= t < 12:
            plan.append((1, 1, t))
        if t >= 14:
            plan.append((2, 1, t))
    frame_of = {t: i for i, t in enumerate(times)}
    boxes = [(10 + 100 * p, 10, 50 + 100 * p, 60) for _, p, _ in plan]
    results = fake_results("rec.mp4", boxes, ["Neutral"] * len(plan), frames=[0] * len(plan), crops=False)
    results = [
        dataclasses.replace(r, frame=frame_of[t], time_s=t, track=k) for r, (k, _, t) in zip(results, plan, strict=True)
    ]
    tj = [{"track": k, "n_faces": sum(1 for x in plan if x[0] == k), "person": p} for k, p in ((0, 0), (1, 1), (2, 1))]
    info = MediaInfo(kind="video", width=320, height=240, duration_s=DURATION, fps=30.0)
    rep = store.ingest.ingest_results(study, png_bytes(3), "rec.mp4", results, tracks_of(tj), media_info=info)
    return rep.media_ids[0]


def _first_at(times: list[float], t: float) -> float:
    return next(x for x in times if x >= t - 1e-12)


def _last_before(times: list[float], t: float) -> float:
    return [x for x in times if x < t][-1]


@pytest.mark.parametrize("rate", [23.976, 25.0, 30000 / 1001, None], ids=["23.976", "25", "29.97", "vfr"])
def test_visible_time_is_exact_at_common_and_variable_frame_rates(store, rate):
    classroom.clear_cache()
    times = _sampled(_decoded(rate))
    mid = _ingest(store, times, "shares")
    store.classroom.add_segment(mid, "first half", 0.0, 10.0)
    tables = store.classroom.class_tables("shares")
    stored = [t for t in times if not 12 <= t < 14]  # the frames with a face: the analysis stores only those
    steps = np.diff(stored)
    regular = steps[steps <= 1.5 * np.median(steps)]  # the 12-14 s gap is not a step
    one = float(np.mean(regular))
    want_a = _first_at(times, 10.0) - 0.0
    want_b = (_last_before(times, 12.0) - _first_at(times, 5.0) + one) + (
        _last_before(times, DURATION) - _first_at(times, 14.0) + one
    )
    whole = {p.person.person_index: p for p in tables.periods if p.segment == classroom.WHOLE}
    assert whole[0].sums.visible == pytest.approx(want_a, abs=1e-9)
    assert whole[1].sums.visible == pytest.approx(want_b, abs=1e-9)
    seg = {r["person_index"]: r for r in tables.segments}
    assert seg[0]["visible_s"] == pytest.approx(_first_at(times, 10.0), abs=0.5e-3 + 1e-9)
    assert seg[0]["visible_share"] == 1.0  # seen in every sampled frame of the segment
    minute = {r["person_index"]: r for r in tables.minutes}
    assert minute[0]["visible_share"] == pytest.approx(want_a / DURATION, abs=0.5e-4 + 1e-9)  # rounded
    assert minute[1]["visible_share"] == pytest.approx(want_b / DURATION, abs=0.5e-4 + 1e-9)
    # rounded to the stated decimals: no float noise such as 0.9999999999999987
    for r in [*tables.minutes, *tables.segments, *tables.overall]:
        for k in ("visible_share", "engagement_p", "valence"):
            v = r[k]
            assert v is None or v == round(v, classroom.DECIMALS)


def test_the_median_step_would_be_biased_at_23_976():
    """What the tables did before: faces times the median step reads 4 % high at 23.976 fps sampled at 5 fps."""
    times = _sampled(_decoded(23.976))
    inside = [t for t in times if t < 10]
    median = float(np.median(np.diff(times)))
    durations = classroom.frame_durations(times)
    exact = sum(durations[t] for t in inside)
    assert exact == pytest.approx(_first_at(times, 10.0), abs=1e-9)
    assert len(inside) * median / exact > 1.03  # the old rule's bias


def test_frame_durations_by_hand():
    times = [0.0, 0.2085, 0.3753, 0.5838, 2.0, 2.2]
    d = classroom.frame_durations(times)
    # steps 0.2085, 0.1668, 0.2085, (gap 1.4162), 0.2: median 0.2085, regular mean (0.2085+0.1668+0.2085+0.2)/4
    one = (0.2085 + 0.1668 + 0.2085 + 0.2) / 4
    assert d[0.0] == pytest.approx(0.2085) and d[0.2085] == pytest.approx(0.1668)
    assert d[0.5838] == pytest.approx(one) and d[2.2] == pytest.approx(one)
    assert math.isclose(sum(d.values()), 0.5838 + 0.2 + 2 * one)
    assert classroom.frame_durations([3.0]) == {3.0: 1.0}


@pytest.mark.parametrize("rate", [24000 / 1001, 25.0, 30000 / 1001, None], ids=["23.976", "25", "29.97", "vfr"])
def test_timestamps_of_synthetic_videos_give_the_hand_computed_time(store, tmp_path, rate):
    """The sampled frames' times as models.decode reads them from encoded videos, then the same hand computation."""
    from models.decode import FrameReader
    from tests.videos import write_video

    classroom.clear_cache()
    times_in = _decoded(rate, seed=1)
    frames = (np.full((32, 32, 3), i % 255, dtype=np.uint8) for i in range(len(times_in)))
    video = tmp_path / "rec.mp4"
    write_video(video, frames, fps=rate or 25.0, codec="mpeg4", times=None if rate else times_in)
    with FrameReader(video, fps=SAMPLE_FPS) as reader:
        times = [f.time_s for f in reader]
    assert len(times) == 100  # one frame per 1/5 s slot of the 20 s
    _ingest(store, times, "videos")
    stored = [t for t in times if not 12 <= t < 14]
    steps = np.diff(stored)
    one = float(np.mean(steps[steps <= 1.5 * np.median(steps)]))
    want_b = (_last_before(times, 12.0) - _first_at(times, 5.0) + one) + (
        _last_before(times, DURATION) - _first_at(times, 14.0) + one
    )
    whole = {
        p.person.person_index: p for p in store.classroom.class_tables("videos").periods if p.segment == classroom.WHOLE
    }
    assert whole[0].sums.visible == pytest.approx(_first_at(times, 10.0), abs=1e-9)
    assert whole[1].sums.visible == pytest.approx(want_b, abs=1e-9)
