"""Long recordings: stored chunk by chunk, a killed ``affectlab analyze`` resumes where it stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from db.schema import Media
from db.services import LabelStore
from models.decode import FrameReader, ResumePoint
from models.persons import PersonConfig
from models.video import FaceReplay, analyze_video, analyze_video_chunks

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def class_video(tmp_path_factory: pytest.TempPathFactory, multi_face_jpg: Path) -> Path:
    """12 s at 10 fps, 320x240, keyframes every 2 s: three real faces drifting in their tiles."""
    from models.faces import FaceDetector
    from tests.videos import Placement, face_patches, render

    patches = face_patches(FaceDetector(), multi_face_jpg, size=80, limit=3)

    def scene(i: int) -> list[Placement]:
        return [Placement(k, 20 + 95 * k + i % 15, 60 + (i // 3) % 30) for k in range(len(patches))]

    path, _ = render(
        tmp_path_factory.mktemp("long") / "class.mp4", patches, scene, 120, size=(320, 240), fps=10, options={"g": "20"}
    )  # a keyframe every 2 s, as recordings have
    return path


@pytest.mark.parametrize("fps", [5.0, None])
def test_frame_reader_resumes_with_the_same_numbers(class_video: Path, fps: float | None) -> None:
    with FrameReader(class_video, fps=fps) as reader:
        straight = [(f.index, f.sample, round(f.time_s, 6), f.image.sum()) for f in reader]
    cut = straight[len(straight) // 2]
    with FrameReader(class_video, fps=fps, resume=ResumePoint(time_s=cut[2], index=cut[0], sample=cut[1])) as reader:
        resumed = [(f.index, f.sample, round(f.time_s, 6), f.image.sum()) for f in reader]
        decoded = reader.frames_decoded
    assert resumed == straight[len(straight) // 2 + 1 :]
    assert decoded < 120  # decoding seeks: it does not start from frame 0


def test_chunks_and_replayed_tracks_equal_a_straight_analysis(class_video: Path, detector) -> None:
    from tests.videos import random_recognizer

    rec = random_recognizer()
    straight = analyze_video(class_video, "class.mp4", detector, rec, fps=5.0)
    chunks = list(analyze_video_chunks(class_video, "class.mp4", detector, rec, 5.0, commit_every_s=2.0))
    assert len(chunks) > 2 and chunks[-1].done
    faces = [f for c in chunks for f in c.faces]
    assert [(f.frame, f.index, f.face.box) for f in faces] == [(f.frame, f.index, f.face.box) for f in straight.faces]
    replay = FaceReplay()
    by_frame: dict[int, list] = {}
    for f in faces:
        by_frame.setdefault(int(f.frame or 0), []).append(f)
    tracks = []
    for frame, fs in sorted(by_frame.items()):
        tracks += replay.add(
            frame, float(fs[0].time_s or 0), [f.face.box for f in fs], np.stack([f.prediction.features for f in fs])
        )
    assert tracks == [f.track for f in straight.faces]
    assert replay.persons(PersonConfig()) == straight.persons


def _env(tmp_path: Path, random_weights_dir: Path) -> tuple[dict[str, str], str]:
    url = f"sqlite:///{tmp_path / 'data' / 'affectlab.sqlite3'}"
    (tmp_path / "data").mkdir()
    LabelStore(url).upgrade()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "AFFECTLAB_WEIGHTS_DIR": str(random_weights_dir),
        "AFFECTLAB_DATA_DIR": str(tmp_path / "data"),
        "DATABASE_URL": url,
    }
    env.pop("AFFECTLAB_STORE_CROPS", None)
    return env, url


def _analyze(video: Path, study: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "affectlab",
        "analyze",
        str(video),
        "--study",
        study,
        "--fps",
        "5",
        "--commit-every",
        "1",
        "--model",
        "enet_b0_8_best_vgaf",
    ]


def _media(store: LabelStore, study: str) -> Media | None:
    def work(s):
        from db.schema import Study

        st = s.scalar(select(Study).where(Study.name == study))
        if st is None:
            return None
        m = s.scalar(select(Media).where(Media.study_id == st.id))
        if m is not None:
            s.expunge(m)
        return m

    return store.transaction(work, write=False)


def test_killed_analysis_resumes_and_ends_like_a_straight_run(
    class_video: Path, tmp_path: Path, random_weights_dir: Path
) -> None:
    env, url = _env(tmp_path, random_weights_dir)
    store = LabelStore(url)
    try:
        straight = subprocess.run(
            _analyze(class_video, "straight"), env=env, cwd=ROOT, capture_output=True, text=True, timeout=600
        )
        assert straight.returncode == 0, straight.stderr
        assert "60 frames analysed" in straight.stdout, straight.stdout

        proc = subprocess.Popen(
            _analyze(class_video, "killed"),
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 300
        media = None
        while time.monotonic() < deadline and proc.poll() is None:
            media = _media(store, "killed")
            if media is not None and media.analysed_until_s is not None:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the analysis ended before its first chunk was seen; cannot test a kill"
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
        media = _media(store, "killed")
        assert media is not None and media.analysis_status == "partial"
        done_before = int(media.analysed_samples or 0)
        assert 0 < done_before < 60
        n_before = len(store.recordings.faces("killed"))

        resumed = subprocess.run(
            _analyze(class_video, "killed"), env=env, cwd=ROOT, capture_output=True, text=True, timeout=600
        )
        assert resumed.returncode == 0, resumed.stderr
        assert f"resumed after {media.analysed_until_s:.2f} s" in resumed.stdout, resumed.stdout
        assert f"{60 - done_before} frames analysed" in resumed.stdout, resumed.stdout
        media = _media(store, "killed")
        assert media is not None and media.analysis_status == "complete" and media.analysed_until_s is None
        assert n_before < len(store.recordings.faces("killed"))

        a = sorted(store.recordings.faces("straight"), key=lambda f: (f.frame, f.box))
        b = sorted(store.recordings.faces("killed"), key=lambda f: (f.frame, f.box))
        assert len(a) == len(b) > 60
        for x, y in zip(a, b, strict=True):
            assert x.frame == y.frame and x.model_label == y.model_label and x.has_crop and y.has_crop
            assert np.allclose(x.box, y.box, atol=1e-3)
            assert x.track_index == y.track_index
        ma, mb = _media(store, "straight"), _media(store, "killed")
        assert ma is not None and mb is not None
        assert [(p.n_faces, p.track_indexes) for p in store.classroom.persons(ma.id)] == [
            (p.n_faces, p.track_indexes) for p in store.classroom.persons(mb.id)
        ]

        again = subprocess.run(
            _analyze(class_video, "killed"), env=env, cwd=ROOT, capture_output=True, text=True, timeout=600
        )
        assert again.returncode == 0 and "skipped, already stored" in again.stdout
    finally:
        store.close()
