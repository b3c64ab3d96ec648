"""Progress lines of the experiments: a :data:`Log` receives one line per step."""

from __future__ import annotations

import time
from collections.abc import Callable

#: Receives one line of progress per step; ``None`` stays silent.
Log = Callable[[str], None] | None


def log_line(log: Log, message: str) -> None:
    """Send ``message`` to ``log`` unless it is ``None``."""
    if log is not None:
        log(message)


def printing_log() -> Callable[[str], None]:
    """A :data:`Log` that prints each line to stdout, stamped with the seconds since it was made."""
    start = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - start:7.1f} s] {message}", flush=True)

    return log
