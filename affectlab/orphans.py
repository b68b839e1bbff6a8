"""Worker processes and their driver: they end with it, and they start without running its main script again."""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any


def exit_with_parent(poll_s: float = 0.5) -> None:
    """Ends this process when its parent (the driver) is gone, even in the middle of a file."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(poll_s)
            if os.getppid() != parent:
                os._exit(3)

    threading.Thread(target=watch, name="affectlab-parent-watch", daemon=True).start()


_STARTING = threading.Lock()


def start_apart(proc: Any) -> None:
    """Starts a spawned worker process without running the driver's main script again in it.

    A spawned child imports the parent's ``__main__`` from its file (``multiprocessing.spawn``); when the driver is a
    Streamlit server, that file is the app's page script, which would run (and serve a page) inside the worker. The
    file is hidden from the preparation while the process starts, so the child imports only what its target needs.
    """
    main = sys.modules.get("__main__")
    with _STARTING:
        hide = main is not None and getattr(main, "__spec__", None) is None and "__file__" in main.__dict__
        saved = main.__dict__.pop("__file__") if hide and main is not None else None
        try:
            proc.start()
        finally:
            if hide and main is not None:
                main.__dict__["__file__"] = saved
