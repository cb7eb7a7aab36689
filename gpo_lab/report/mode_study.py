"""The report's part for a sweep with online jobs: the offline claims read the offline jobs, and this part
sets the modes side by side (:mod:`~gpo_lab.report.online_offline`) and fits the over-optimisation curves
(:mod:`~gpo_lab.report.overoptimisation`): its section of ``report.md``, its figures and its entry of
``claims.json``."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from gpo_lab.report.axes import Metric
from gpo_lab.report.cells import table
from gpo_lab.report.collect import Sweep
from gpo_lab.report.online_offline import LEVEL, MODE, ModeGap, mode_frontiers, online_offline, with_modes
from gpo_lab.report.overoptimisation import CurveFit, curve_points, curves_figure, fit_curves

FIGURES = {"online_offline": "online_offline.png", "overoptimisation": "overoptimisation.png"}
CAPTIONS = {
    "online_offline": (
        "Online against offline pairs",
        "Per loss, quality against KL: hollow squares and dashed line, offline pairs (from the SFT policy); "
        "filled circles and solid line, online pairs (from the current policy). Points: configurations "
        "(mean over seeds); lines: each mode's frontier.",
    ),
    "overoptimisation": (
        "Over-optimisation curves",
        "Every evaluation of every job: the golden reward gain over the reference's samples against sqrt(KL), "
        "with Gao et al.'s fit R(d) = d(α − b log d) per mode (dashed offline, solid online) and its peak (★).",
    ),
}


@dataclass
class ModeStudy:
    gaps: list[ModeGap]
    fits: list[CurveFit]
    points: pd.DataFrame = field(repr=False)
    counts: dict[str, int] = field(default_factory=dict)  # completed jobs per mode


def offline_part(sweep: Sweep) -> Sweep | None:
    """The sweep restricted to its offline jobs when it has online ones too (None when it has none)."""
    jobs = with_modes(sweep.jobs)
    if not (jobs[MODE] == "online").any():
        return None
    return dataclasses.replace(sweep, jobs=sweep.jobs[(jobs[MODE] == "offline").to_numpy()].reset_index(drop=True))


def mode_study(sweep: Sweep, x: Metric | None, y: Metric | None, value: str) -> ModeStudy:
    jobs = with_modes(sweep.jobs)
    done = jobs[jobs["status"] == "completed"]
    gaps = online_offline(sweep.jobs, x, y, value) if x is not None and y is not None else []
    kl_name = x.name if x is not None and x.name.startswith("val/") else "val/kl_seq"
    points = curve_points(sweep, kl_name)
    fits = fit_curves(points) if not points.empty else []
    return ModeStudy(gaps, fits, points, {m: int((done[MODE] == m).sum()) for m in ("offline", "online")})


def drawers(sweep: Sweep, study: ModeStudy, x: Metric | None, y: Metric | None, value: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if x is not None and y is not None:
        out["online_offline"] = lambda: mode_frontiers(sweep.jobs, x, y, value)
    if not study.points.empty:
        kl_name = x.name if x is not None and x.name.startswith("val/") else "val/kl_seq"
        out["overoptimisation"] = lambda: curves_figure(study.points, study.fits, kl_name)
    return out


def _n(value: float, digits: int = 3) -> str:
    return f"{value:.{digits}g}" if math.isfinite(value) else "∞" if value == math.inf else "—"


def _interval(pair: tuple[float, float], digits: int = 3) -> str:
    return "—" if any(math.isnan(v) for v in pair) else f"{_n(pair[0], digits)} to {_n(pair[1], digits)}"


def section(study: ModeStudy, y: Metric | None, figures: dict) -> list[str]:
    quality = y.spec if y is not None else "quality"
    lines = [
        "## Online against offline pairs",
        "",
        f"Completed jobs: {study.counts.get('offline', 0)} offline, {study.counts.get('online', 0)} online "
        "(`pairs.online`). The claims above and figures 1-7 read the offline jobs only.",
        "",
    ]
    if study.gaps:
        lines += [
            f"Gap: online minus offline frontier in `{quality}`, averaged (in log KL) over the two frontiers' common "
            "KL range (matched KL), and over KL budgets up to the longer frontier's end (each mode's best within "
            f"the budget); {int(LEVEL * 100)}% bootstrap intervals (prompts resampled, seed noise as in claim 1's "
            "test). Ranking accuracy: `val/ranking_accuracy` (mean ± se over jobs), and online minus offline "
            "paired by (β, seed), ± 1.96 se.",
            "",
        ]
        rows = []
        for g in study.gaps:
            off, on = g.ranking.get("offline"), g.ranking.get("online")
            diff, low, high, _ = g.ranking_gap
            rows.append(
                [
                    g.loss,
                    _n(g.gap),
                    _interval(g.interval),
                    _interval(g.kl_range),
                    f"{_n(g.budget_gap)} ({_interval(g.budget_interval)})",
                    _interval(g.budget_range),
                    f"{off[0]:.3f} ± {off[1]:.3f}" if off else "—",
                    f"{on[0]:.3f} ± {on[1]:.3f}" if on else "—",
                    f"{_n(diff)} ({_interval((low, high))})",
                ]
            )
        lines += table(
            [
                "loss",
                "gap at matched KL",
                "interval",
                "KL range",
                "gap within a KL budget",
                "budgets",
                "ranking acc. offline",
                "online",
                "online − offline",
            ],
            rows,
        )
        lines.append("")
    if study.fits:
        lines += [
            "Over-optimisation: R(d) = d(α − b log d), d = sqrt(KL), R = golden reward gain over the reference's "
            "samples, fitted over every evaluation of the loss and mode's jobs; the peak's KL d*² and reward b·d* "
            "with 95% intervals over bootstrap replicates of the jobs (∞: replicates without a peak).",
            "",
        ]
        rows = [
            [
                f.loss,
                f.mode,
                _n(f.alpha),
                _n(f.b),
                _n(f.peak_kl),
                _interval(f.kl_interval),
                _n(f.peak_reward),
                _interval(f.reward_interval),
                f"{f.with_peak:.2f}",
                _n(f.max_kl),
                str(f.jobs),
            ]
            for f in study.fits
        ]
        lines += table(
            ["loss", "mode", "α", "b", "KL at peak", "interval", "peak gain", "interval", "P(peak)", "max KL", "jobs"],
            rows,
        )
        lines.append("")
    for key, (title, caption) in CAPTIONS.items():
        if key in figures:
            lines += [f"### {title}", "", f"![{title}]({figures[key].name})", "", caption, ""]
    return lines


def _num(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def claims_entry(study: ModeStudy) -> dict[str, Any]:
    """``claims.json``'s ``online_offline``: per loss the gap at matched KL with its interval, the ranking
    accuracies, and each mode's over-optimisation peak."""
    out: dict[str, Any] = {}
    for g in study.gaps:
        out[g.loss] = {
            "gap": _num(g.gap),
            "interval": [_num(g.interval[0]), _num(g.interval[1])],
            "level": LEVEL,
            "kl_range": [_num(g.kl_range[0]), _num(g.kl_range[1])],
            "budget_gap": _num(g.budget_gap),
            "budget_interval": [_num(g.budget_interval[0]), _num(g.budget_interval[1])],
            "budget_kl_range": [_num(g.budget_range[0]), _num(g.budget_range[1])],
            "ranking_accuracy": {m: _num(v[0]) for m, v in g.ranking.items()},
            "ranking_accuracy_gap": _num(g.ranking_gap[0]),
            "ranking_accuracy_gap_interval": [_num(g.ranking_gap[1]), _num(g.ranking_gap[2])],
        }
    for f in study.fits:
        entry = out.setdefault(f.loss, {})
        entry.setdefault("peaks", {})[f.mode] = {
            "kl": _num(f.peak_kl),
            "kl_interval": [_num(f.kl_interval[0]), _num(f.kl_interval[1])],
            "reward_gain": _num(f.peak_reward),
            "reward_gain_interval": [_num(f.reward_interval[0]), _num(f.reward_interval[1])],
        }
    return out
