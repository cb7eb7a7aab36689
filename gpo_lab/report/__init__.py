"""Turn a sweep into the paper's plots and tables: ``python -m gpo_lab.report SWEEP_DIR``.

The same functions serve the notebooks: :func:`collect` reads a sweep directory into a table of
jobs, :func:`analyse` aggregates seeds, finds each loss's best beta and judges the paper's claims
(:mod:`~gpo_lab.report.claims`: ``report.claims``), the functions of :mod:`~gpo_lab.report.figures`,
:mod:`~gpo_lab.report.training_figures` and :mod:`~gpo_lab.report.loss_figure` draw, and
:func:`make_report` does all of it and writes report.md. None of it loads torch or Lightning; the
bandit study's figures are a command of their own (:mod:`gpo_lab.report.bandit`).
"""

from gpo_lab.report.analysis import Report, analyse
from gpo_lab.report.axes import Metric, MissingMetric
from gpo_lab.report.build import histories, make_report
from gpo_lab.report.collect import Sweep, collect, locate

__all__ = ["Metric", "MissingMetric", "Report", "Sweep", "analyse", "collect", "histories", "locate", "make_report"]
