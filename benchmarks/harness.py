"""Shared pieces of the benchmark scripts: timing protocol, worker subprocesses with wall-time and memory
guards, the machine's matmul rate, and table printing.

Runs in either virtual environment (standard library and NumPy only at import time).
"""

from __future__ import annotations

import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent

#: Prefix of the one stdout line a worker writes its JSON result on.
RESULT_TAG = "@@RESULT@@ "


# ------------------------------------------------------------------------------------------------ timing


@dataclass
class Timing:
    """Wall times of one measurement.

    ``first_s`` is the warm-up call (for JAX it includes tracing and compilation); ``times_s`` the timed
    calls after it. ``median_s`` is their median. When the warm-up alone exceeded the time cap of a
    measurement whose first call carries no compilation, it is the only sample (``warmup_reused``).
    """

    first_s: float
    times_s: list[float] = field(default_factory=list)
    warmup_reused: bool = False

    @property
    def median_s(self) -> float:
        return statistics.median(self.times_s)


def time_calls(fn: Callable[[], Any], *, repeats: int, max_seconds: float, first_compiles: bool) -> Timing:
    """Median-of-repeats timing after a warm-up call.

    Args:
        fn: runs the whole computation and blocks until its result is ready.
        repeats: timed calls after the warm-up, at most.
        max_seconds: stop repeating once the timed calls have taken this long in all (at least one is
            always made when ``first_compiles``).
        first_compiles: the warm-up includes compilation, so it cannot stand in for a timed call.
    """
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    if first > max_seconds and not first_compiles:
        return Timing(first, [first], warmup_reused=True)
    times: list[float] = []
    while len(times) < max(1, repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if sum(times) > max_seconds:
            break
    return Timing(first, times)


def peak_rss_bytes() -> int:
    """Peak resident memory of this process so far (``ru_maxrss``, KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def current_rss_bytes() -> int:
    """Resident memory of this process now (``VmRSS``)."""
    return _rss_bytes(os.getpid())


def emit(result: dict[str, Any]) -> None:
    """Write a worker's result as the tagged JSON line its parent reads."""
    result.setdefault("peak_rss_bytes", peak_rss_bytes())
    sys.stdout.write(RESULT_TAG + json.dumps(result) + "\n")
    sys.stdout.flush()


def read_job() -> dict[str, Any]:
    """A worker's job: JSON from the file named by argv[1], or from stdin."""
    if len(sys.argv) > 1:
        return json.loads(Path(sys.argv[1]).read_text())
    return json.loads(sys.stdin.read())


# ------------------------------------------------------------------------------------------------ workers


@dataclass
class WorkerOutcome:
    """What came back from a worker: its result, or why there is none."""

    result: dict[str, Any] | None
    status: str  # "ok" | "timeout" | "memory" | "error"
    detail: str = ""
    wall_s: float = 0.0
    peak_rss_bytes: int = 0


def _rss_bytes(pid: int, field_name: str = "VmRSS") -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError, ValueError):
        pass
    return 0


def run_worker(
    python: str | Path,
    script: str | Path,
    job: dict[str, Any],
    *,
    timeout_s: float,
    memory_cap_bytes: int,
    env: dict[str, str] | None = None,
) -> WorkerOutcome:
    """Run ``python script`` on ``job`` (JSON on stdin) in its own process group.

    The worker is killed when it runs past ``timeout_s`` or its resident memory passes
    ``memory_cap_bytes`` (polled every 0.2 s). Its peak resident memory (``VmHWM``) is sampled while it
    runs; the worker also reports its own ``ru_maxrss``.
    """
    proc = subprocess.Popen(
        [str(python), str(script)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
        start_new_session=True,
    )
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(job))
    proc.stdin.close()
    # Drain the pipes from threads so that a chatty worker never blocks on a full pipe.
    import threading

    chunks: dict[str, list[str]] = {"out": [], "err": []}

    def drain(stream, key):  # type: ignore[no-untyped-def]
        for line in stream:
            chunks[key].append(line)

    threads = [
        threading.Thread(target=drain, args=(proc.stdout, "out"), daemon=True),
        threading.Thread(target=drain, args=(proc.stderr, "err"), daemon=True),
    ]
    for t in threads:
        t.start()
    t0 = time.perf_counter()
    status, detail, hwm = "ok", "", 0
    while proc.poll() is None:
        elapsed = time.perf_counter() - t0
        hwm = max(hwm, _rss_bytes(proc.pid, "VmHWM"))
        if elapsed > timeout_s:
            status, detail = "timeout", f"ran past the {timeout_s:.0f} s per-measurement timeout"
        elif _rss_bytes(proc.pid) > memory_cap_bytes:
            status, detail = "memory", f"resident memory passed the {memory_cap_bytes / 2**30:.1f} GiB cap"
        if status != "ok":
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            break
        time.sleep(0.2)
    proc.wait()
    for t in threads:
        t.join(timeout=5)
    wall = time.perf_counter() - t0
    result = None
    for line in chunks["out"]:
        if line.startswith(RESULT_TAG):
            result = json.loads(line[len(RESULT_TAG) :])
    if status == "ok" and result is None:
        status = "error"
        err = "".join(chunks["err"]).strip().splitlines()
        detail = err[-1] if err else f"exit status {proc.returncode}"
    elif status != "ok" and chunks["err"]:
        # A killed worker's last progress report (tqdm redraws a line with carriage returns) says how far it got.
        last = "".join(chunks["err"]).replace("\r", "\n").strip().splitlines()
        if last:
            detail += f"; it had reached: {last[-1].strip()}"
    if result is not None:
        hwm = max(hwm, int(result.get("peak_rss_bytes", 0)))
    return WorkerOutcome(result, status, detail, wall, hwm)


# ------------------------------------------------------------------------------------------------ machine


def matmul_gflops(*, threads: int = 2, n: int = 2048, repeats: int = 5) -> float:
    """The float32 matmul rate of this machine in GFLOP/s: median over ``repeats`` ``n × n`` products."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(n, n), torch.randn(n, n)
        timing = time_calls(lambda: a @ b, repeats=repeats, max_seconds=30, first_compiles=True)
    finally:
        torch.set_num_threads(old)
    return 2 * n**3 / timing.median_s / 1e9


def load_average() -> str:
    """The 1-minute load average (other processes sharing the cores make timings noisy)."""
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "?"


def memory_available_bytes() -> int:
    """``MemAvailable`` from /proc/meminfo."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


# ------------------------------------------------------------------------------------------------ output


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "—"
    if s >= 100:
        return f"{s:.0f} s"
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.1f} ms"
    return f"{s * 1e6:.0f} µs"


def fmt_ratio(r: float | None) -> str:
    if r is None:
        return "—"
    return f"{r:.3g}×"


def fmt_bytes(b: float | None) -> str:
    if not b:
        return "—"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if b < 1024 or unit == "TiB":
            return f"{b:.0f} {unit}" if unit == "B" else f"{b:.2f} {unit}"
        b /= 1024
    return ""


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table with aligned columns."""
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])
