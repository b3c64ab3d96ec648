"""The claims under test, judged from the experiments' results, and the Markdown report that shows them.

Each claim is stated, given the measured numbers, and judged by an explicit criterion (listed in the
report), so that a reader can disagree with the criterion without re-running anything.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from .regression import GiB
from .results import model_label
from .stats import PowerLaw, loglog_slope

#: How each verdict is reached, printed under the table of claims.
CRITERIA = {
    "error": "the log-log slope of the relative error against width is below zero by more than two standard "
    "errors, and the mean error at the largest width is below that at the smallest",
    "parts": "in standard parametrisation ‖Θ_aa‖ grows (slope > 0.1) while ‖Θ_a≠b‖ stays bounded (|slope| < 0.1) "
    "over the widths swept; in NTK parametrisation, whose kernel is the standard one divided by the width, the "
    "same statement reads ‖Θ_aa‖ bounded (slope < 0.1) while ‖Θ_a≠b‖ decays (slope < −0.1)",
    "lambda_max": "the log-log slope of the relative error of λ_max against width is below zero by more than two "
    "standard errors",
    "lambda_min": "the same holds for the relative errors of both λ_min and κ, over the seeds whose eNTK is "
    "numerically non-singular",
    "ridgeless": "‖f_pNTK − f_eNTK‖/‖f_eNTK‖ decreases with width (negative log-log slope) and the test "
    "accuracies differ by at most 0.02 at the largest width",
    "ridge": "with a ridge, the summed-logit kernel O·K (a scalar kernel as good as K without one) gives "
    "predictions further from the eNTK's than the ridgeless pNTK does, at the largest width",
    "large": "pNTK kernel regression ran at an N whose eNTK (N²O²·8 bytes) exceeds the budget",
    "cost": "the eNTK holds O² times the numbers of the pNTK, takes longer at the largest N, and its time grows "
    "faster with O",
}


@dataclass(frozen=True)
class Claim:
    """One claim, what was measured, and whether it holds.

    Attributes:
        claim: the statement under test.
        measured: the numbers, in words.
        holds: the verdict; ``None`` for an observation that tests no claim.
        criterion: a key of :data:`CRITERIA`, or ``""`` for an observation.
        source: the result (file stem) it was measured in.
    """

    claim: str
    measured: str
    holds: bool | None
    criterion: str
    source: str

    @property
    def verdict(self) -> str:
        """``"yes"``, ``"no"`` or ``"—"`` (an observation)."""
        return "—" if self.holds is None else ("yes" if self.holds else "no")

    def to_dict(self) -> dict:
        """The fields and the verdict as plain values."""
        return {**asdict(self), "verdict": self.verdict}


def _g(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3g}"


def _slope(fit: dict | None) -> float | None:
    return None if fit is None else fit["slope"]


def _decreasing(*fits: dict | None) -> bool | None:
    """Whether every fitted slope is significantly negative (see :attr:`PowerLaw.significantly_negative`);
    ``None`` when a fit is missing or has no standard error (too few usable widths)."""
    if any(f is None or f["stderr"] is None or not math.isfinite(f["stderr"]) for f in fits):
        return None
    return all(PowerLaw(**f).significantly_negative for f in fits if f is not None)


def _sweep_claims(result: dict, source: str) -> Iterator[Claim]:
    spec, rows, fits = result["spec"], result["by_width"], result["fits"]
    who = f"[{model_label(spec)}]"
    first, last = rows[0], rows[-1]
    span = f"widths {first['width']}→{last['width']}"

    def slope(metric: str) -> str:
        fit = fits[metric]
        return "n/a" if fit is None else f"{fit['slope']:.3g} ± {fit['stderr']:.2g}"

    e0, e1 = first["relative_error"]["mean"], last["relative_error"]["mean"]
    decreasing = _decreasing(fits["relative_error"])
    yield Claim(
        f"{who} ‖Θ − K⊗I‖_F / ‖Θ‖_F → 0 as width grows",
        f"slope {slope('relative_error')}; error {_g(e0)} → {_g(e1)} ({span})",
        None if decreasing is None else decreasing and e1 < e0,
        "error",
        source,
    )
    sd, so = _slope(fits["norm_Theta_diagonal"]), _slope(fits["off_diagonal_error"])
    ntk = spec.get("parametrization") == "ntk"
    yield Claim(
        f"{who} block-diagonal part of Θ "
        + ("stays bounded, off-diagonal part decays" if ntk else "grows with width, off-diagonal part stays bounded"),
        f"‖Θ_aa‖_F ∝ width^{_g(sd)}, ‖Θ_a≠b‖_F ∝ width^{_g(so)}"
        + ("" if sd is None or so is None else f" (ratio ∝ width^{_g(so - sd)})"),
        None if sd is None or so is None else ((sd < 0.1 and so < -0.1) if ntk else (sd > 0.1 and abs(so) < 0.1)),
        "parts",
        source,
    )
    l0, l1 = first["lambda_max_relative_error"]["mean"], last["lambda_max_relative_error"]["mean"]
    yield Claim(
        f"{who} λ_max(K) follows λ_max(Θ)",
        f"relative error {_g(l0)} → {_g(l1)}, slope {slope('lambda_max_relative_error')}",
        _decreasing(fits["lambda_max_relative_error"]),
        "lambda_max",
        source,
    )
    m1, c1 = last["lambda_min_relative_error"]["mean"], last["cond_relative_error"]["mean"]
    yield Claim(
        f"{who} λ_min and κ of K follow those of Θ (empirically)",
        f"λ_min rel. error slope {slope('lambda_min_relative_error')} ({_g(m1)} at width {last['width']}); "
        f"κ rel. error slope {slope('cond_relative_error')} ({_g(c1)})",
        _decreasing(fits["lambda_min_relative_error"], fits["cond_relative_error"]),
        "lambda_min",
        source,
    )


def _regression_claims(result: dict, source: str) -> Iterator[Claim]:
    spec, rows = result["spec"], result["widths"]
    who = f"[{model_label(spec)}]"
    first, last = rows[0], rows[-1]
    diff = [r["relative_difference"]["pntk"] for r in rows]
    slope = loglog_slope([r["width"] for r in rows], diff).slope if len(rows) > 1 else None
    gap = abs(last["accuracy"]["entk"] - last["accuracy"]["pntk"])
    yield Claim(
        f"{who} ridgeless pNTK-KR (K per output) matches eNTK-KR",
        f"‖f_K − f_Θ‖/‖f_Θ‖ {_g(diff[0])} → {_g(diff[-1])} (widths {first['width']}→{last['width']}, "
        f"slope {_g(slope)}); test acc. eNTK {last['accuracy']['entk']:.3f} vs pNTK {last['accuracy']['pntk']:.3f}, "
        f"network {last['accuracy']['network']:.3f}",
        None if slope is None else (slope < 0 and gap <= 0.02),
        "ridgeless",
        source,
    )
    d = last["relative_difference"]
    yield Claim(
        f"{who} with a ridge, pNTK-KR need not match eNTK-KR",
        f"ridge λ = {spec['ridge']:g}·tr K/N, width {last['width']}: ‖f − f_Θ‖/‖f_Θ‖ "
        f"{_g(d['sum_ridge'])} with the summed-logit kernel O·K vs {_g(d['pntk'])} ridgeless; "
        f"{_g(d['pntk_ridge'])} with the 1/O-normalised K",
        d["sum_ridge"] > d["pntk"],
        "ridge",
        source,
    )
    large = result.get("large")
    if large:
        yield Claim(
            f"{who} pNTK-KR scales where the eNTK does not fit",
            f"N = {large['N']}: eNTK {large['entk_bytes'] / GiB:.1f} GiB > budget "
            f"{large['entk_budget'] / GiB:.1f} GiB; pNTK {large['pntk_bytes'] / GiB:.2f} GiB, test acc. "
            f"{large['accuracy']:.3f} (vs {last['accuracy']['pntk']:.3f} at N = {result['N_train']}) "
            f"in {large['seconds']:.0f} s",
            large["entk_bytes"] > large["entk_budget"],
            "large",
            source,
        )


def _timing_claims(result: dict, source: str) -> Iterator[Claim]:
    spec, fits = result["spec"], result["fits"]
    big = result["against_N"][-1]
    ratio_bytes = big["bytes_entk"] / big["bytes_pntk"]
    ratio_time = big["seconds_entk"] / big["seconds_pntk"]
    se, sp = fits["entk_vs_O"]["slope"], fits["pntk_vs_O"]["slope"]
    yield Claim(
        f"[{model_label(spec)}] the pNTK costs about O² less than the eNTK",
        f"N = {big['N']}, O = {big['O']}: {ratio_bytes:.0f}× fewer bytes, {ratio_time:.1f}× faster; "
        f"time ∝ O^{se:.2f} (eNTK) vs O^{sp:.2f} (pNTK)",
        ratio_bytes == big["O"] ** 2 and ratio_time > 1 and se > sp,
        "cost",
        source,
    )


def _trajectory_claims(result: dict, source: str) -> Iterator[Claim]:
    spec, rows = result["spec"], result["checkpoints"]
    first, last = rows[0], rows[-1]
    yield Claim(
        f"[{model_label(spec)}] the approximation through training (width {spec['width']})",
        f"‖Θ − K⊗I‖/‖Θ‖ {_g(first['relative_error'])} at init → {_g(last['relative_error'])} after "
        f"{last['epoch']} epochs; λ_max rel. error {_g(first['lambda_max_relative_error'])} → "
        f"{_g(last['lambda_max_relative_error'])}; test acc. {last['test_accuracy']:.3f}",
        None,
        "",
        source,
    )


_CLAIMS: dict[str, Callable[[dict, str], Iterator[Claim]]] = {
    "width_sweep": _sweep_claims,
    "regression": _regression_claims,
    "timing": _timing_claims,
    "trajectory": _trajectory_claims,
}


def claims(results: dict[str, dict]) -> list[Claim]:
    """Judge every claim that the results bear on.

    Args:
        results: experiment results by file stem, as the experiment functions return them.

    Returns:
        The claims, in the order of ``results``.
    """
    return [c for source, result in results.items() for c in _CLAIMS[result["experiment"]](result, source)]


def claims_table(items: list[dict]) -> str:
    """The claims (as :meth:`Claim.to_dict` gives them) as a Markdown table ``claim | measured | holds?``, each
    verdict naming its criterion."""
    lines = ["| claim | measured | holds? |", "|---|---|---|"]
    for c in items:
        verdict = f"{c['verdict']} ({c['criterion']})" if c["criterion"] else c["verdict"]
        lines.append(f"| {c['claim']} | {c['measured']} | {verdict} |")
    return "\n".join(lines)


def _mean_std(stats: dict) -> str:
    return "n/a" if stats["mean"] is None else f"{stats['mean']:.3g} ± {stats['std']:.2g}"


def _sweep_section(result: dict) -> list[str]:
    lines = [
        "| width | P | ‖Θ − K⊗I‖/‖Θ‖ | λ_max rel. err. | λ_min rel. err. | κ rel. err. | non-singular seeds |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["by_width"]:
        lines.append(
            f"| {r['width']} | {r['P']:,} | {_mean_std(r['relative_error'])} | "
            f"{_mean_std(r['lambda_max_relative_error'])} | {_mean_std(r['lambda_min_relative_error'])} | "
            f"{_mean_std(r['cond_relative_error'])} | "
            f"{r['lambda_min_relative_error']['count']}/{r['relative_error']['count']} |"
        )
    fits = ", ".join(f"{k} {_g(_slope(v))}" for k, v in result["fits"].items())
    return lines + ["", f"Fitted log-log slopes against width: {fits}."]


def _trajectory_section(result: dict) -> list[str]:
    lines = [
        "| epoch | train loss | test acc. | ‖Θ − K⊗I‖/‖Θ‖ | λ_max rel. err. | λ_min rel. err. |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["checkpoints"]:
        lines.append(
            f"| {r['epoch']} | {r['train_loss']:.4f} | {r['test_accuracy']:.3f} | {_g(r['relative_error'])} | "
            f"{_g(r['lambda_max_relative_error'])} | {_g(r['lambda_min_relative_error'])} |"
        )
    return lines


def _regression_section(result: dict) -> list[str]:
    lines = [
        "| width | acc. eNTK | acc. pNTK | acc. eNTK ridge | acc. pNTK ridge | acc. network | "
        "diff. ridgeless | diff. ridge (K) | diff. ridge (O·K) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["widths"]:
        a, d = r["accuracy"], r["relative_difference"]
        lines.append(
            f"| {r['width']} | {a['entk']:.3f} | {a['pntk']:.3f} | {a['entk_ridge']:.3f} | {a['pntk_ridge']:.3f} | "
            f"{a['network']:.3f} | {_g(d['pntk'])} | {_g(d['pntk_ridge'])} | {_g(d['sum_ridge'])} |"
        )
    singular = sorted({k for r in result["widths"] for k, v in r["singular"].items() if v})
    if singular:
        lines += ["", f"Solved by the pseudo-inverse (singular train kernel) at some width: {', '.join(singular)}."]
    large = result.get("large")
    if large:
        lines += [
            "",
            f"pNTK kernel regression alone at width {large['width']} on N = {large['N']} training samples "
            f"(the eNTK would take {large['entk_bytes'] / GiB:.1f} GiB, its budget "
            f"{large['entk_budget'] / GiB:.1f} GiB): test accuracy {large['accuracy']:.3f}, kernels in "
            f"{large['seconds_pntk']:.1f} s.",
        ]
    return lines


def _timing_section(result: dict) -> list[str]:
    lines = [
        "| N | O | P | eNTK (s) | pNTK (s) | time ratio | eNTK bytes | pNTK bytes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["against_N"] + result["against_O"]:
        lines.append(
            f"| {r['N']} | {r['O']} | {r['P']:,} | {r['seconds_entk']:.3f} | {r['seconds_pntk']:.3f} | "
            f"{r['seconds_entk'] / r['seconds_pntk']:.1f} | {r['bytes_entk']:,} | {r['bytes_pntk']:,} |"
        )
    return lines


_SECTIONS = {
    "width_sweep": ("Width sweep at initialisation", _sweep_section),
    "trajectory": ("Through training", _trajectory_section),
    "regression": ("Kernel regression", _regression_section),
    "timing": ("Cost", _timing_section),
}


def write_report(
    path: str | Path, results: dict[str, dict], items: list[Claim], figures: dict[str, Path], header: list[str]
) -> Path:
    """Write the Markdown report: the claims table with its criteria, then one section per result with its
    figure (linked relative to the report) and its numbers.

    Args:
        path: the ``report.md`` to write.
        results: experiment results by file stem.
        items: the judged claims.
        figures: the PNG of each result, by file stem.
        header: lines under the title (preset, device, run time, ...).

    Returns:
        The path written.
    """
    path = Path(path)
    table = claims_table([c.to_dict() for c in items])
    lines = ["# pNTK vs eNTK: reproduction report", "", *header, "", "## Claims", "", table, ""]
    lines += ["A claim holds when:", ""] + [f"- **{k}**: {v}." for k, v in CRITERIA.items()]
    for source, result in results.items():
        title, section = _SECTIONS[result["experiment"]]
        spec = result["spec"]
        lines += ["", f"## {title}: {model_label(spec)}", ""]
        if source in figures:
            link = figures[source].relative_to(path.parent)
            lines += [f"![{title}, {model_label(spec)}]({link})", ""]
        lines += section(result) + ["", f"Numbers: `{source}.json` ({result['seconds']:.0f} s)."]
    path.write_text("\n".join(lines) + "\n")
    return path
