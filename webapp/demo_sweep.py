"""``python -m webapp.demo_sweep``: deletes the demo study's media older than ``AFFECTLAB_DEMO_TTL_HOURS`` now.

``webapp/docker_start.sh`` runs it at every start; the app itself sweeps again on its first page run and then at most
hourly (:func:`webapp.services.demo.clear_demo_if_due`).
"""

from __future__ import annotations

import sys
from pathlib import Path

from core.settings import Settings
from db.services import LabelStore
from webapp.services import demo


def main() -> int:
    """Sweeps once; returns the exit status."""
    s = Settings.from_env()
    Path(s.data_dir).mkdir(parents=True, exist_ok=True)
    store = LabelStore(s.database_url, store_crops=s.store_crops, data_dir=Path(s.data_dir).resolve())
    try:
        media_dir = Path(s.data_dir).resolve() / "media" if s.store_crops else None
        n = demo.clear_demo(store, media_dir, s.demo_ttl_hours)
    finally:
        store.close()
    print(f"demo study: {n} media item(s) older than {s.demo_ttl_hours:g} h deleted", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
