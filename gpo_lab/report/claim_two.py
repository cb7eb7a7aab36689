"""Claim 2 shown: the figure of every loss's best beta on theory's line (``beta_theory.png``) and the
lines of report.md that state the slope, the paper groups' ratio, the verdict and the losses off the line.

The numbers come from :func:`~gpo_lab.report.beta_ratio.claim_two_record`, the same record claims.json
holds, so that the report and the file never disagree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from gpo_lab.report.axes import MissingMetric
from gpo_lab.report.beta_ratio import claim_two_record, theory_line
from gpo_lab.report.cells import number, table
from gpo_lab.report.figure_style import MARKERS, loss_colors
from gpo_lab.report.peak_fit import LEVEL, BestBeta

FIGURE_FILE = "beta_theory.png"
CAPTION = (
    "Best β against f''(0)/|f'(0)|",
    "The fitted best β of every loss f(β·ρ) with a positive f''(0)/|f'(0)| and its best β inside its grid "
    "(bars: its bootstrap interval), log-log. Theory: best β × f''(0)/|f'(0)| is the same for every loss, "
    "the solid line of slope −1 (through the median of the losses); dashed: the least-squares fit, with the "
    "interval of its slope. Losses whose distance from the solid line excludes 0 are marked off the line.",
)


def beta_theory(bests: Sequence[BestBeta], level: float = LEVEL) -> Figure:
    """Fitted best beta (with its interval) against f''(0)/|f'(0)|, log-log, and theory's line of slope -1
    through the median of log(best beta * ratio); the fitted slope is drawn dashed."""
    line = theory_line(bests, level)
    if not line.losses:
        raise MissingMetric("no loss with a positive f''(0)/|f'(0)| has its best β inside its grid")
    colors = loss_colors(p.loss for p in line.losses)
    figure = Figure(figsize=(7, 5.4), layout="constrained")
    ax = figure.subplots()
    ratios = np.array([p.ratio for p in line.losses])
    for i, p in enumerate(line.losses):
        low = p.best - p.low if math.isfinite(p.low) else 0.0
        high = p.high - p.best if math.isfinite(p.high) else 0.0
        marker = MARKERS[i % len(MARKERS)]
        label = f"{p.loss}{' (off the line)' if p.off else ''}"
        ax.errorbar(p.ratio, p.best, yerr=[[low], [high]], fmt=marker, color=colors[p.loss], capsize=3, label=label)
    span = np.exp(np.linspace(math.log(ratios.min()) - 0.3, math.log(ratios.max()) + 0.3, 50))
    ax.plot(span, np.exp(line.anchor) / span, color="0.3", lw=1.2, label="theory: slope −1")
    if math.isfinite(line.slope):
        x, y = np.log(ratios), np.log([p.best for p in line.losses])
        fit = np.exp(y.mean() + line.slope * (np.log(span) - x.mean()))
        interval = f" [{line.slope_low:.2f}, {line.slope_high:.2f}]" if math.isfinite(line.slope_low) else ""
        ax.plot(span, fit, color="0.5", lw=1, ls="--", label=f"fit: slope {line.slope:.2f}{interval}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ticks = sorted(set(ratios.tolist()))
    ax.set_xticks(ticks, labels=[f"{r:g}" for r in ticks])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("f''(0)/|f'(0)| (log scale)")
    ax.set_ylabel(f"fitted best β, {level:.0%} interval (log scale)")
    ax.set_title(f"Claim 2: best β × f''(0)/|f'(0)| is constant? Verdict: {line.verdict}")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return figure


def claim_two_lines(bests: Sequence[BestBeta], level: float = LEVEL) -> list[str]:
    """report.md's claim-2 section: the verdict, the slope and the ratio against theory, and every loss."""
    record = claim_two_record(bests, level)
    lines = [f"**Claim 2: {record['verdict']}.** {claim_two_sentence(record)}", ""]
    lines.append(
        "Theory: the best β times f''(0)/|f'(0)| is the same for every loss f(β·ρ), a slope of −1 of log best "
        "β on log f''(0)/|f'(0)|. The slope is fitted by least squares over the losses below; its interval "
        "redoes the fit on every bootstrap replicate. Consistent: the interval holds −1 and excludes 0 and no "
        "loss leaves the line; inconsistent: it excludes −1 or a loss leaves the line; else inconclusive. A "
        "loss's distance is from theory's line through the median of log(best β·f''(0)/|f'(0)|); it leaves the "
        "line when its interval excludes 0 (Bonferroni over the losses: at most a "
        f"{1 - level:.0%} chance of naming any when all lie on it)."
    )
    lines.append("")
    rows = []
    for loss, entry in record["losses"].items():
        distance = entry["distance"]
        if distance is None:
            rows.append([loss, number(entry["ratio"]), "—", "—", "—", f"left out: {entry['left_out']}"])
            continue
        interval = entry.get("distance_interval")
        half = (interval[1] - interval[0]) / 2 if interval else math.nan
        widths = f"{distance / half:+.1f}" if half > 0 else "—"
        note = "**off the line**" if entry.get("off_line") else ""
        best = f"{number(entry['best_beta'])} ({_interval(entry['interval'])})"
        rows.append([loss, number(entry["ratio"]), best, f"{distance:+.2f} (×{math.exp(distance):.3g})", widths, note])
    header = ["loss", "f''(0)/|f'(0)|", "best β (interval)", "distance, log units (factor)", "in half-widths", ""]
    return lines + table(header, rows)


def claim_two_sentence(record: dict[str, Any]) -> str:
    """One sentence per measurement: the slope against -1, the paper groups' ratio against 2, losses off the line."""
    if record["slope"] is None:
        text = f"No slope: {record['problem']}."
    else:
        text = f"Slope {record['slope']:.2f}"
        if record["slope_interval"]:
            low, high = record["slope_interval"]
            text += f" ({record['level']:.0%} interval {low:.2f} to {high:.2f})"
        text += "; theory −1."
    if record["ratio"] is not None:
        interval = f" ({_interval(record['interval'])})" if record["interval"] else " (exact values, no interval)"
        low, high = record["groups"]
        text += (
            f" Best β of the f''(0)/|f'(0)| = {low:g} group over the {high:g} group: {record['ratio']:.3g}{interval}"
        )
        text += f"; theory {record['theory']:g}."
        if record["interval"] and record["interval"][0] <= 1 <= record["interval"][1]:
            text += " It also contains 1 (no shift): the sweep does not resolve the shift."
    off = [f"{loss} ({record['losses'][loss]['distance']:+.2f} log units)" for loss in record["off_line"]]
    text += f" Off theory's line: {', '.join(off)}." if off else " No loss is off theory's line."
    return text


def _interval(pair: list[float] | None) -> str:
    return f"{number(pair[0])} – {number(pair[1])}" if pair else "no interval"
