"""Persons: tracks joined across dropouts and gallery re-flows, never two faces of one frame in one person."""

from __future__ import annotations

import numpy as np

from models.persons import PersonConfig, TrackProfile, check_persons, link_tracks, overlaps


def prof(track, start, end, centre, feature, size=80.0, end_centre=None):
    return TrackProfile(
        track=track,
        start_s=start,
        end_s=end,
        n_faces=10,
        feature=np.asarray(feature, float),
        first_centre=centre,
        last_centre=end_centre or centre,
        size=size,
    )


def basis(k, d=8):
    v = np.full(d, 0.1)
    v[k] = 1.0
    return v


def test_dropout_rejoins_at_the_same_tile_and_overlap_never_joins():
    ps = [
        prof(0, 0, 10, (100, 100), basis(0)),
        prof(1, 0, 30, (400, 100), basis(1)),
        prof(2, 15, 30, (102, 98), basis(0)),
        prof(3, 5, 8, (700, 100), basis(2)),
    ]
    persons = link_tracks(ps)
    assert persons[0] == persons[2]  # came back to the same tile
    assert len({persons[0], persons[1], persons[3]}) == 3  # overlapping in time: different people
    check_persons(ps, persons)


def test_same_face_elsewhere_joins_on_appearance_only_if_no_overlap():
    ps = [
        prof(0, 0, 10, (100, 100), basis(0)),
        prof(1, 0, 40, (400, 100), basis(1)),
        prof(2, 0, 40, (700, 100), basis(2)),
        prof(3, 20, 40, (900, 500), basis(0)),
    ]
    persons = link_tracks(ps)
    assert persons[3] == persons[0]
    # a look-alike that overlaps the first is refused, whatever the similarity
    ps.append(prof(4, 5, 9, (900, 600), basis(0)))
    persons = link_tracks(ps)
    assert persons[4] != persons[0]
    check_persons(ps, persons)


def test_reflow_keeps_the_order_of_look_alike_students():
    # six identical-looking students in one row; the second leaves and the others move one tile left
    same = basis(0)
    before = [prof(i, 0, 10, (100 + 200 * i, 100), same + 0.01 * basis(i)) for i in range(6)]
    after = [prof(6 + k, 10.4, 20, (100 + 200 * k, 100), same + 0.01 * basis(i)) for k, i in enumerate([0, 2, 3, 4, 5])]
    ps = before + after
    persons = link_tracks(ps, PersonConfig(min_similarity=2.0))  # appearance alone never joins here
    for k, i in enumerate([0, 2, 3, 4, 5]):
        assert persons[6 + k] == persons[i], (k, i, persons)
    assert persons[1] not in {persons[6 + k] for k in range(5)}


def test_a_tile_sliding_into_a_leavers_place_joins_the_mover_not_the_leaver():
    # three students in a row; at 10 s student 1 leaves and student 2's tile slides into its place; the tracker
    # refused to continue student 1's track there (its features jumped), so a new track starts at once
    ps = [
        prof(0, 0, 20, (100, 100), basis(0)),
        prof(1, 0, 9.8, (300, 100), basis(1)),
        prof(2, 0, 9.8, (500, 100), basis(2)),
        prof(3, 10.0, 20, (300, 100), basis(2) + 0.05 * basis(1)),
    ]
    persons = link_tracks(ps)
    assert persons[3] == persons[2] and persons[3] != persons[1]
    # features that cannot tell 1 from 2: the move (a track ended elsewhere at that moment) still decides
    same = [prof(p.track, p.start_s, p.end_s, p.first_centre, basis(5) + 0.01 * basis(p.track)) for p in ps]
    persons = link_tracks(same, PersonConfig(min_similarity=2.0))
    assert persons[3] == persons[2] and persons[3] != persons[1]
    # a real return to the same tile after a gap longer than the tracker's still joins on position
    back = [prof(0, 0, 10, (300, 100), basis(1)), prof(1, 14, 20, (302, 99), basis(1) + 0.3 * basis(3))]
    assert len(set(link_tracks(back).values())) == 1


def test_overlaps():
    assert overlaps(prof(0, 0, 5, (0, 0), basis(0)), prof(1, 5, 9, (0, 0), basis(0)))
    assert not overlaps(prof(0, 0, 5, (0, 0), basis(0)), prof(1, 5.1, 9, (0, 0), basis(0)))


def test_video_student_leaving_for_longer_than_the_gap_keeps_one_person(tmp_path, detector):
    """A single-student webcam plus a neighbour, built from real faces: the student is away 4 s (a new track)."""
    from models.video import analyze_video, video_json
    from tests import testdata
    from tests.videos import Placement, face_patches, random_recognizer, render

    pats = [
        face_patches(detector, testdata.astronaut(), size=112)[0],
        face_patches(detector, testdata.pyfeat_file("single_face.jpg"), size=112)[0],
    ]

    def scene(i):  # 2 fps: B is away from 3 s to 7 s, then back in its place
        return [Placement(0, 10, 60)] + ([] if 6 <= i < 14 else [Placement(1, 190, 60)])

    path, _ = render(tmp_path / "away.mp4", pats, scene, 20, fps=2)
    a = analyze_video(path, "away.mp4", detector, random_recognizer("mbf_va_mtl"), fps=None)
    doc = video_json(a)
    who = {}
    for f in doc["faces"]:
        cx = (f["box"][0] + f["box"][2]) / 2
        who.setdefault(0 if cx < 160 else 1, set()).add((f["track"], f["person"]))
    assert len({t for t, _ in who[1]}) == 2  # two tracks for B ...
    assert len({p for _, p in who[1]}) == 1  # ... one person
    assert {p for _, p in who[0]}.isdisjoint({p for _, p in who[1]})
    assert all("person" in t for t in doc["tracks"]) and doc["file"]["n_persons"] == 2


def test_video_gallery_reflow_keeps_every_person_one_student(tmp_path, detector):
    """A 3x2 gallery of real faces; at 6 s student 1 leaves and the tiles after it move one place back; at 12 s
    student 3 leaves and the last tile (student 5) slides into its place. The tracker's default guards only."""
    from collections import defaultdict

    from models.tracking import TrackerConfig
    from models.video import VideoConfig, analyze_video
    from tests import testdata
    from tests.videos import background, face_patches, random_recognizer, write_video

    w, h, cols, size, fps, seconds = 480, 320, 3, 96, 2, 18
    pats = (
        face_patches(detector, testdata.pyfeat_file("multi_face.jpg"), size=size, margin=0.15)
        + face_patches(detector, testdata.pyfeat_file("single_face.jpg"), size=size, margin=0.15)
    )[:6]
    assert len(pats) == 6

    def rect(k):
        x = (k % cols) * (w // cols) + (w // cols - size) // 2
        y = (k // cols) * (h // 2) + (h // 2 - size) // 2
        return (x, y, x + size, y + size)

    def layout(t):
        order = list(range(6)) if t < 6 else [s for s in range(6) if s != 1] if t < 12 else [0, 2, 5, 4]
        return [(s, k) for k, s in enumerate(order)]

    truth = [layout(i / fps) for i in range(seconds * fps)]
    bg = background(w, h)

    def frames():
        for shown in truth:
            img = bg.copy()
            for s, k in shown:
                x1, y1, x2, y2 = rect(k)
                img[y1:y2, x1:x2] = pats[s]
            yield img

    path = write_video(tmp_path / "gallery.mp4", frames(), fps=fps)
    a = analyze_video(
        path,
        "gallery.mp4",
        detector,
        random_recognizer(),
        fps=None,
        config=VideoConfig(tracker=TrackerConfig()),
    )
    students_of = defaultdict(set)
    n = 0
    for f in a.faces:
        cx, cy = (f.face.box[0] + f.face.box[2]) / 2, (f.face.box[1] + f.face.box[3]) / 2
        who = [s for s, k in truth[f.frame] if rect(k)[0] <= cx <= rect(k)[2] and rect(k)[1] <= cy <= rect(k)[3]]
        assert len(who) == 1, (f.frame, f.face.box)
        students_of[a.person(f.track)].add(who[0])
        n += 1
    assert n >= 0.95 * sum(len(t) for t in truth), "faces found"
    assert all(len(s) == 1 for s in students_of.values()), dict(students_of)  # every person is one student
    moved = {s for s in range(2, 6)}
    assert len(students_of) <= 6 + len(moved), "a moved student is at most two persons"
