"""Run a preset's experiments and write their JSON, figures and the report into one folder."""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch

from .. import __version__
from .figures import figure
from .presets import Preset, get_preset
from .regression import Regression, regression
from .report import claims, write_report
from .results import write_json
from .setup import Log, analysis_threads, log_line
from .timing import Timing, timing
from .trajectory import Trajectory, trajectory
from .width_sweep import WidthSweep, width_sweep

RUNNERS: dict[type, Callable[..., dict]]
RUNNERS = {WidthSweep: width_sweep, Trajectory: trajectory, Regression: regression, Timing: timing}


def default_device() -> str:
    """``"cuda"`` when a GPU is visible, else ``"cpu"``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def reproduce(
    out: str | Path = "results",
    preset: str | Preset = "demo",
    *,
    data_root: str | Path | None = None,
    device: str | None = None,
    log: Log = None,
) -> dict:
    """Run every experiment of ``preset`` and write the results into ``out``.

    Writes ``out/<experiment>.json`` for each experiment (named like ``width_sweep_mnist1d_mlp``),
    ``out/figures/<experiment>.png``, the checkpoints of training runs under ``out/checkpoints/``,
    ``out/summary.json`` (the judged claims, run time, versions) and ``out/report.md``, which states each
    claim, the measured numbers and whether it holds, and embeds the figures.

    Args:
        out: the output folder; created if missing, files in it overwritten.
        preset: ``"quick"``, ``"demo"``, ``"paper"`` or a :class:`~pntk.experiments.presets.Preset`.
        data_root: directory of file-based datasets (CIFAR-10 for ``"paper"``).
        device: where models and kernels live; default :func:`default_device`.
        log: receives one line per step.

    Returns:
        The summary written to ``summary.json``: ``preset``, ``device``, ``seconds`` (wall clock),
        ``cpu_seconds`` (CPU time of this process's threads), ``claims`` (each with
        ``claim``, ``measured``, ``holds``, ``verdict``, ``criterion``, ``source``), ``report``, ``files``,
        ``versions``.
    """
    preset = get_preset(preset) if isinstance(preset, str) else preset
    device = device or default_device()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start, cpu_start = time.perf_counter(), time.process_time()
    results, figures, files = {}, {}, []
    for spec in preset.specs:
        log_line(log, f"{spec.name}: running")
        options = {"checkpoint_dir": out / "checkpoints" / spec.name} if isinstance(spec, Trajectory) else {}
        with analysis_threads(device):
            result = RUNNERS[type(spec)](spec, device=device, data_root=data_root, log=log, **options)
        files.append(write_json(out / f"{spec.name}.json", result))
        figures[spec.name] = figure(result, out / "figures" / f"{spec.name}.png")
        results[spec.name] = result
        log_line(log, f"{spec.name}: done in {result['seconds']:.1f} s")
    items = claims(results)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    versions = {"pntk": __version__, "torch": torch.__version__, "python": platform.python_version()}
    if device.startswith("cuda"):
        where = torch.cuda.get_device_name(device)
    else:
        where = f"{platform.processor() or 'CPU'}, {torch.get_num_threads()} threads"
    header = [
        f"Preset **{preset.name}**: {preset.description}.",
        f"Device: {device} ({where}); run time {seconds / 60:.1f} min (CPU time of all threads "
        f"{cpu_seconds / 60:.1f} min); " + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".",
    ]
    report = write_report(out / "report.md", results, items, figures, header)
    summary = {
        "preset": preset.name,
        "device": device,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "claims": [c.to_dict() for c in items],
        "report": str(report),
        "files": [str(f) for f in [*files, *figures.values()]],
        "versions": versions,
    }
    write_json(out / "summary.json", summary)
    return summary
