"""``python -m db``: the label store's command line (see :mod:`db.cli`)."""

from db.cli import main

raise SystemExit(main())
