"""Worker processes end with their driver: a watch thread that exits the process once its parent is gone."""

from __future__ import annotations

import os
import threading
import time


def exit_with_parent(poll_s: float = 0.5) -> None:
    """Ends this process when its parent (the driver) is gone, even in the middle of a file."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(poll_s)
            if os.getppid() != parent:
                os._exit(3)

    threading.Thread(target=watch, name="affectlab-parent-watch", daemon=True).start()
