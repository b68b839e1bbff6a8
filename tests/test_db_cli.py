"""``python -m db``: exit codes, one-line errors, and each command end to end."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from db.cli import main
from db.services import LabelStore
from tests.pg import fake_results, png_bytes

ROOT = Path(__file__).resolve().parents[1]
BOXES = [(10.0, 10.0, 50.0, 60.0), (60.0, 10.0, 100.0, 60.0)]


@pytest.fixture
def env(monkeypatch, tmp_path, migrated_url, random_weights_dir):
    monkeypatch.setenv("AFFECTLAB_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DATABASE_URL", migrated_url)
    monkeypatch.setenv("AFFECTLAB_WEIGHTS_DIR", str(random_weights_dir))  # ingest computes the faces' features
    return migrated_url


def _analysis_file(tmp_path: Path) -> Path:
    files, faces = [], []
    for i, name in enumerate(["a.png", "b.png"]):
        (tmp_path / "media").mkdir(exist_ok=True)
        (tmp_path / "media" / name).write_bytes(png_bytes(20 + i))
        files.append({"file": name, "kind": "image", "width": 160, "height": 120, "n_faces": 2, "error": None})
        faces += [r.to_json() for r in fake_results(name, BOXES, ["Happiness", "Fear"], seed=i)]
    doc = {"model": "enet_b0_8_best_vgaf", "weights_hash": "7219cfb0", "labels": [], "files": files, "faces": faces}
    path = tmp_path / "analysis.json"
    path.write_text(json.dumps(doc))
    return path


def test_cli_round_trip(env, tmp_path, capsys):
    analysis = _analysis_file(tmp_path)
    assert main(["ingest", str(analysis), "--study", "pilot", "--media-dir", str(tmp_path / "media")]) == 0
    assert "media 2 new" in capsys.readouterr().out
    assert main(["ingest", str(analysis), "--study", "pilot", "--media-dir", str(tmp_path / "media")]) == 0
    assert "media 0 new, 2 already stored" in capsys.readouterr().out

    assert main(["export", "--study", "pilot", "--format", "csv", "--out", str(tmp_path / "e.csv")]) == 0
    out = capsys.readouterr().out
    assert "predictions only" in out and "4 faces" in out

    # Edit the export in a "spreadsheet" and import it back: only the edit becomes a vote.
    df = pd.read_csv(tmp_path / "e.csv")
    df.loc[0, "label"] = "Surprise"
    df.to_csv(tmp_path / "edited.csv", index=False)
    assert main(["import-labels", str(tmp_path / "edited.csv"), "--study", "pilot", "--annotator", "eve"]) == 0
    out = capsys.readouterr().out
    assert "4 rows, 1 votes added for 'eve'" in out
    # The export's 4 labels (the fake predictions carry no valence) minus the edited one still hold their value.
    assert "3 values unedited since the export" in out

    assert main(["stats", "--study", "pilot", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["counts"]["annotations"] == 1 and stats["human_counts"]["Surprise"] == 1
    assert main(["stats", "--study", "pilot"]) == 0
    assert "Surprise" in capsys.readouterr().out

    store = LabelStore(env)
    media_id = store.recordings.media("pilot")[0].id
    store.close()
    assert main(["delete-media", str(media_id)]) == 0
    assert "2 faces, 1 face annotation," in capsys.readouterr().out
    assert main(["delete-media", str(media_id)]) == 1
    assert "no media with id" in capsys.readouterr().err


def test_cli_errors_are_one_line_naming_the_file(env, tmp_path, capsys):
    analysis = _analysis_file(tmp_path)
    assert main(["ingest", str(analysis), "--study", "p", "--media-dir", str(tmp_path / "media")]) == 0
    capsys.readouterr()
    bad = tmp_path / "bad.csv"
    bad.write_text("face_id,label\n1,Anger\n2,Angry\n")
    assert main(["import-labels", str(bad), "--study", "p", "--annotator", "x"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: bad.csv:3: invalid label 'Angry'")
    assert main(["import-labels", str(tmp_path / "missing.csv"), "--study", "p", "--annotator", "x"]) == 1
    assert "missing.csv: file not found" in capsys.readouterr().err
    assert main(["ingest", str(tmp_path / "nope.json"), "--study", "p"]) == 1
    assert "nope.json: file not found" in capsys.readouterr().err
    (tmp_path / "broken.json").write_text("{not json")
    assert main(["ingest", str(tmp_path / "broken.json"), "--study", "p"]) == 1
    assert "broken.json: not a JSON file" in capsys.readouterr().err
    assert main(["stats", "--study", "nope"]) == 1
    assert "no study named 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["export", "--study", "p", "--format", "xls", "--out", "x"])
    assert e.value.code == 2


def test_cli_backup_uses_the_online_backup_api(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("AFFECTLAB_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert main(["upgrade"]) == 0
    store = LabelStore(f"sqlite:///{tmp_path / 'data' / 'affectlab.sqlite3'}")
    store.ingest.ingest_results("s", png_bytes(1), "a.png", fake_results("a.png", BOXES, ["Fear", "Fear"]))
    # Back up while another connection holds the database open (the app keeps running).
    assert main(["backup", "--out", str(tmp_path / "b.sqlite3")]) == 0
    store.close()
    with sqlite3.connect(tmp_path / "b.sqlite3") as conn:
        assert conn.execute("SELECT count(*) FROM faces").fetchone()[0] == 2
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert main(["backup"]) == 0
    assert len(list((tmp_path / "data" / "backups").glob("affectlab-*.sqlite3"))) == 1
    assert main(["backup", "--out", str(tmp_path / "b.sqlite3")]) == 1
    assert "exists already" in capsys.readouterr().err


def test_cli_backup_refuses_postgresql(monkeypatch, capsys):
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg://u:secret@127.0.0.1:1/x")
    assert main(["backup"]) == 1
    err = capsys.readouterr().err
    assert "pg_dump" in err and "secret" not in err


def test_python_dash_m_db_entry_point(tmp_path):
    env = {"AFFECTLAB_DATA_DIR": str(tmp_path / "d"), "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "-m", "db", "upgrade"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "schema revision" in r.stdout
    r = subprocess.run(
        [sys.executable, "-m", "db", "stats", "--study", "x"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert r.returncode == 1 and r.stderr.startswith("error: no study named 'x'")


def test_import_labels_help_documents_the_format_and_the_duplicate_rule(capsys):
    with pytest.raises(SystemExit) as e:
        main(["import-labels", "--help"])
    assert e.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    for column in ("exported_label", "exported_valence", "exported_arousal", "exported_engagement", "exported_note"):
        assert column in out
    assert "face_id plus any of: label, valence, arousal, engagement, note" in out
    assert "SAME FACE ON TWO ROWS (both lines are named" in out
    assert "--apply-unchanged" not in out


def test_import_segments_subprocess_names_the_bad_line_then_takes_a_good_file(tmp_path):
    from tests.test_db_classes import _ingest

    env = {"AFFECTLAB_DATA_DIR": str(tmp_path / "d"), "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "-m", "db", "upgrade"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    store = LabelStore(f"sqlite:///{tmp_path / 'd' / 'affectlab.sqlite3'}")
    try:
        mid = _ingest(store, study="class")
    finally:
        store.close()

    def run(csv: str) -> subprocess.CompletedProcess[str]:
        path = tmp_path / "segments.csv"
        path.write_text(csv, encoding="utf-8")
        return subprocess.run(
            [sys.executable, "-m", "db", "import-segments", str(path), "--study", "class", "--created-by", "teacher"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
        )

    bad = run(f"media,name,start_s,end_s\n{mid},intro,0,30\nlecture.mp4,quiz,90,60\n")
    assert bad.returncode == 1, bad.stderr
    assert "line 3" in bad.stderr and "line 2" not in bad.stderr, bad.stderr
    store = LabelStore(f"sqlite:///{tmp_path / 'd' / 'affectlab.sqlite3'}")
    try:
        assert store.classroom.segments("class") == [], "all or nothing: the good line is not stored either"
    finally:
        store.close()
    good = run(f"media,name,start_s,end_s\n{mid},intro,0,30\nlecture.mp4,quiz,60,90\n")
    assert good.returncode == 0, good.stderr
    assert good.stdout.strip().endswith("2 segments added to 1 recordings"), good.stdout
