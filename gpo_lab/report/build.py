"""A sweep's report: choose the metrics, aggregate seeds, draw what the data allows, write report.md.

What cannot be drawn (a metric no job logged) becomes a note in the report instead of an error,
so a sweep still running, one with failed jobs, or one whose jobs log no KL still gets a report.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd

from gpo_lab.errors import ConfigError
from gpo_lab.report.analysis import Report, analyse
from gpo_lab.report.axes import KL_CANDIDATES, QUALITY_CANDIDATES, Metric, MissingMetric
from gpo_lab.report.claim_two import beta_theory
from gpo_lab.report.claims_file import CLAIMS_FILE, write_claims
from gpo_lab.report.collect import COMPLETED, Sweep, collect
from gpo_lab.report.figure_style import save
from gpo_lab.report.figures import quality_vs_beta, tradeoff
from gpo_lab.report.frontier_test import MARGIN
from gpo_lab.report.loss_figure import loss_functions
from gpo_lab.report.markdown import render
from gpo_lab.report.mode_study import FIGURES as MODE_FIGURES
from gpo_lab.report.mode_study import ModeStudy, claims_entry, mode_study, offline_part, section
from gpo_lab.report.mode_study import drawers as study_drawers
from gpo_lab.report.training_figures import dynamics, regularizer_vs_kl

log = logging.getLogger(__name__)

FIGURES = {
    "tradeoff": "tradeoff.png",
    "beta": "beta.png",
    "kl_beta": "kl_beta.png",
    "regularizer_kl": "regularizer_kl.png",
    "dynamics": "dynamics.png",
    "beta_theory": "beta_theory.png",
    "loss_functions": "loss_functions.png",
    **MODE_FIGURES,
}


def make_report(
    sweep: str | Path | Sweep,
    out: str | Path | None = None,
    x: str | None = None,
    y: str | None = None,
    value: str = "final",
    jobs: list[str] | None = None,
    margin: float = MARGIN,
) -> Report:
    """Write ``report.md``, ``claims.json`` and the figures into ``out`` (default: the sweep directory)."""
    sweep = sweep if isinstance(sweep, Sweep) else collect(sweep)
    if out is None and not Path(sweep.source).is_dir():
        raise ValueError(f"The sweep {sweep.source} has no directory to write into: pass out=DIRECTORY.")
    offline = offline_part(sweep)  # a sweep with online jobs: the claims read its offline ones
    report = analyse(offline or sweep, x=x, y=y, value=value, jobs=jobs, margin=margin)
    study = None
    if offline is not None:
        report.sweep = sweep
        study = mode_study(sweep, report.x, report.y, value)
    out = writable_output(Path(out if out is not None else sweep.source), default=out is None)
    drawers = {
        "tradeoff": lambda: tradeoff(
            report.configs, _need(report.x, "KL", KL_CANDIDATES), _need(report.y, "quality", QUALITY_CANDIDATES)
        ),
        "beta": lambda: quality_vs_beta(report.configs, _need(report.y, "quality", QUALITY_CANDIDATES)),
        "kl_beta": lambda: quality_vs_beta(report.configs, _need(report.x, "KL", KL_CANDIDATES)),
        "regularizer_kl": lambda: regularizer_vs_kl(histories(sweep, completed_jobs(sweep)), report.x),
        "dynamics": lambda: dynamics(histories(sweep, report.dynamics_jobs), report.x),
        "beta_theory": lambda: beta_theory(report.claims.bests if report.claims else []),
        "loss_functions": lambda: loss_functions(sweep.loss_shapes),
    }
    if study is not None:
        drawers |= study_drawers(sweep, study, report.x, report.y, value)
    try:
        _write(report, drawers, out, study)
    except OSError as error:
        raise ConfigError(f"Cannot write the report into {out}: {error.strerror or error}. {_OUT_FIX}") from error
    return report


_OUT_FIX = "Pass --out DIRECTORY (out=...) to write it elsewhere; the sweep's files are only read."


def writable_output(out: Path, default: bool) -> Path:
    """``out``, created if need be, or a ConfigError saying where the report can go instead."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"Cannot create the report directory {out}: {error.strerror or error}. {_OUT_FIX}") from error
    if not os.access(out, os.W_OK | os.X_OK):
        where = "the sweep directory " if default else ""
        raise ConfigError(f"Cannot write the report into {where}{out}: it is read-only for this user. {_OUT_FIX}")
    return out


def _write(report: Report, drawers: dict, out: Path, study: ModeStudy | None = None) -> None:
    all_failed = report.sweep.state.all_failed  # then a missing metric says nothing the failures do not
    undrawn = []
    for key, draw in drawers.items():
        try:
            figure = draw()
        except MissingMetric as missing:
            undrawn.append(key)
            if not all_failed:
                report.notes.append(f"Figure '{key}' not drawn: {missing}.")
                log.warning("Figure %s not drawn: %s", key, missing)
            continue
        report.figures[key] = save(figure, out / FIGURES[key])
    if all_failed and undrawn:
        report.notes.append(f"Every job failed, so no figure of results was drawn ({', '.join(undrawn)}).")
    for stale in set(FIGURES) - set(report.figures):  # a figure of an earlier report would mislead
        (out / FIGURES[stale]).unlink(missing_ok=True)
    report.path = out / "report.md"
    extra = section(study, report.y, report.figures) if study is not None else None
    report.path.write_text(render(report, extra))
    if report.claims is not None:
        write_claims(report.claims, out, {"online_offline": claims_entry(study)} if study is not None else None)
    else:
        (out / CLAIMS_FILE).unlink(missing_ok=True)  # an earlier report's verdict would mislead


def completed_jobs(sweep: Sweep) -> list[str]:
    return sweep.jobs[sweep.jobs["status"] == COMPLETED]["job"].tolist()


def histories(sweep: Sweep, jobs: list[str]) -> dict[str, tuple[str, pd.DataFrame]]:
    losses = sweep.jobs.set_index("job")["loss"]
    return {job: (str(losses[job]), sweep.history(job)) for job in jobs}


def _need(metric: Metric | None, kind: str, candidates: tuple[str, ...]) -> Metric:
    if metric is None:
        raise MissingMetric(f"no {kind} metric was logged (looked for {', '.join(candidates)})")
    return metric
