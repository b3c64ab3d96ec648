"""Run a preset's experiments and write their JSON, figures and the report into one folder."""

from __future__ import annotations

import platform
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from .claims import Claim, claims
from .figures import figure
from .presets import Preset, get_preset
from .progress import Log, log_line
from .regression import Regression, regression
from .report import write_report
from .results import write_json
from .runtime import analysis_threads, default_device
from .timing import Timing, timing
from .trajectory import Trajectory, trajectory
from .width_sweep import WidthSweep, width_sweep

RUNNERS: dict[type, Callable[..., Any]] = {
    WidthSweep: width_sweep,
    Trajectory: trajectory,
    Regression: regression,
    Timing: timing,
}


@dataclass(frozen=True)
class Summary:
    """What one ``pntk reproduce`` did, written to ``summary.json``.

    Attributes:
        preset: the preset's name.
        device: where it ran.
        where: the device in words (CPU threads or GPU name).
        seconds: wall clock.
        cpu_seconds: CPU time (user + system) of this process, all threads.
        claims: the judged claims.
        report: the report's path.
        files: the JSON and PNG files written.
        versions: of pntk, torch and Python.
    """

    preset: str
    device: str
    where: str
    seconds: float
    cpu_seconds: float
    claims: list[Claim]
    report: str
    files: list[str]
    versions: dict[str, str]


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def reproduce(
    out: str | Path = "results",
    preset: str | Preset = "demo",
    *,
    data_root: str | Path | None = None,
    device: str | None = None,
    log: Log = None,
) -> Summary:
    """Run every experiment of ``preset`` and write the results into ``out``.

    Writes ``out/<experiment>.json`` for each experiment (named like ``width_sweep_mnist1d_mlp``, readable
    with :func:`pntk.experiments.read_result`), ``out/figures/<experiment>.png``, the checkpoints of training
    runs under ``out/checkpoints/``, ``out/summary.json`` and ``out/report.md``, which states each claim and
    its criterion, the measured numbers with their intervals and the verdict, and embeds the figures.

    Args:
        out: the output folder; created if missing, files in it overwritten.
        preset: ``"quick"``, ``"demo"``, ``"paper"`` or a :class:`~pntk.experiments.presets.Preset`.
        data_root: directory of file-based datasets (CIFAR-10 for ``"paper"``).
        device: where models and kernels live; default :func:`.runtime.default_device`.
        log: receives one line per step.

    Returns:
        The :class:`Summary` written to ``summary.json``.
    """
    preset = get_preset(preset) if isinstance(preset, str) else preset
    device = device or default_device()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start, cpu_start = time.perf_counter(), _cpu_seconds()
    results: dict[str, Any] = {}
    figures: dict[str, Path] = {}
    files = []
    for spec in preset.specs:
        log_line(log, f"{spec.name}: running")
        options = {"checkpoint_dir": out / "checkpoints" / spec.name} if isinstance(spec, Trajectory) else {}
        with analysis_threads(device):
            result = RUNNERS[type(spec)](spec, device=device, data_root=data_root, log=log, **options)
        files.append(write_json(out / f"{spec.name}.json", result))
        figures[spec.name] = figure(result, out / "figures" / f"{spec.name}.png")
        results[spec.name] = result
        log_line(log, f"{spec.name}: done in {result.seconds:.1f} s")
    items = claims(results)
    seconds, cpu_seconds = time.perf_counter() - start, _cpu_seconds() - cpu_start
    versions = {"pntk": __version__, "torch": torch.__version__, "python": platform.python_version()}
    if device.startswith("cuda"):
        where = torch.cuda.get_device_name(device)
    else:
        where = f"{platform.processor() or 'CPU'}, {torch.get_num_threads()} threads"
    header = [
        f"Preset **{preset.name}**: {preset.description}.",
        f"Device: {device} ({where}); wall clock {seconds / 60:.1f} min, CPU time (user + system, all threads) "
        f"{cpu_seconds / 60:.1f} min; " + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".",
    ]
    report = write_report(out / "report.md", results, items, figures, header)
    summary = Summary(
        preset.name,
        device,
        where,
        seconds,
        cpu_seconds,
        items,
        str(report),
        [str(f) for f in [*files, *figures.values()]],
        versions,
    )
    write_json(out / "summary.json", summary)
    return summary
