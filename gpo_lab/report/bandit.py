"""The two figures of the bandit study, drawn from a finished sweep directory.

    python -m gpo_lab.report.bandit multirun/bandit [--beta 0.5]

A command of its own: it rebuilds each run's loss and bandit problem (torch) to compute the exact
values at step 0, so ``python -m gpo_lab.report`` never imports this module (nothing in the rest of
gpo_lab.report does) and runs without torch.

writes into that directory
- ``bandit_training.png``: R_mu, KL(pi || pi_ref) and pi's mass off the support of mu over
  training, for the partial-support runs at one beta, one colour per loss;
- ``bandit_kl_vs_beta.png``: KL at the end of training against beta and against the rescaled
  beta * f''(0)/|f'(0)|, the weight of the offline regularizer in the Taylor expansion. If the
  expansion explains how the losses regularize, the curves line up in the second panel.
One row per kind of labels found in the sweep.
- ``bandit_claims.md``: the report's claims on exact values (:mod:`gpo_lab.report.claims`): per
  kind of labels and of mu, each loss's best beta by the same fit of the final win rate against
  log beta (no bootstrap: nothing is noisy), the edge-of-grid notes, and the ratio of best betas
  between the f''(0)/|f'(0)| groups against theory's.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

from hydra.utils import instantiate
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, FormatStrFormatter, NullFormatter
from omegaconf import OmegaConf

from gpo_lab.losses.catalog import GPO_MEMBERS, LINESTYLES
from gpo_lab.report.claims import exact_claims
from gpo_lab.report.verdict import best_beta_lines, claim_two, edge_warnings, ratio_lines
from gpo_lab.store.records import read_json, read_metrics
from gpo_lab.store.run_files import METRICS_FILE, SUMMARY_FILE, RunFiles
from gpo_lab.tasks.bandit.problem import build_problem

TRAINING_FIGURE = "bandit_training.png"
KL_FIGURE = "bandit_kl_vs_beta.png"
CLAIMS_FILE = "bandit_claims.md"
QUALITY = ("val/win_rate", "val/reward")  # the first that every run logged
LOSS_ORDER = list(GPO_MEMBERS)  # the paper's order
SYMLOG_TICKS = [0, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000]
SETTLING_WINDOW = 0.2  # a KL has settled if it moved < 1% over the last 20% of the steps


@dataclass
class BanditRun:
    loss: str
    beta: float
    labels: str
    mu: str
    ratio: float  # f''(0)/|f'(0)|
    curve: dict[str, list[tuple[int, float]]]  # val metric -> [(step, value)]

    def final(self, metric: str) -> float:
        return self.curve[metric][-1][1]

    def settled(self, metric: str = "val/kl") -> bool:
        points = self.curve[metric]
        last_step, last = points[-1]
        earlier = [v for s, v in points if s <= last_step * (1 - SETTLING_WINDOW)]
        return bool(earlier) and abs(last - earlier[-1]) <= 0.01 * max(abs(last), 1e-6)


def load_runs(sweep_dir: Path) -> list[BanditRun]:
    """Every completed bandit run (a config.yaml with a ``bandit`` block) that is ``sweep_dir`` or
    one of its job directories."""
    runs = []
    sweep_dir = Path(sweep_dir)
    for run_dir in [sweep_dir, *sorted(p for p in sweep_dir.iterdir() if p.is_dir())] if sweep_dir.is_dir() else []:
        summary_path = run_dir / SUMMARY_FILE
        if not summary_path.is_file() or not RunFiles(run_dir).config.is_file():
            continue
        if read_json(summary_path).get("status") != "completed":
            continue
        cfg = OmegaConf.load(RunFiles(run_dir).config)
        if "bandit" not in cfg:
            continue
        # A GPO loss given by f (loss.fn) was checked when it trained: not again here.
        loss = instantiate(cfg.loss) if cfg.loss.get("name") else instantiate(cfg.loss, check=False)
        curve: dict[str, list[tuple[int, float]]] = {}
        for record in read_metrics(run_dir / METRICS_FILE):
            for key, value in record.items():
                if key.startswith("val/") and value is not None:
                    curve.setdefault(key, []).append((record["step"], value))
        if "val/kl" not in curve:
            continue
        # Step 0 (pi = pi_ref) is not a validation of the run; it is exact, so compute it here.
        problem = build_problem(cfg.bandit, cfg.seed)
        start = problem.metrics(problem.reference_logits, loss, float(cfg.beta))
        for key, points in curve.items():
            name = key.removeprefix("val/")
            if name in start and points[0][0] > 0:
                points.insert(0, (0, float(start[name])))
        runs.append(
            BanditRun(
                loss.name,
                float(cfg.beta),
                str(cfg.bandit.labels),
                str(cfg.bandit.mu),
                loss.derivatives.regularization_ratio,
                curve,
            )
        )
    return runs


def _styles(runs: list[BanditRun]) -> dict[str, dict]:
    """A colour and a line style per loss, the same in every figure: the members' line styles keep
    curves that coincide (logistic, savage and, after rescaling, exponential; squared and truncated
    quadratic) all visible. Other losses take the next colours, solid."""
    names = sorted({r.loss for r in runs}, key=_order)
    others = iter(range(len(LOSS_ORDER), len(LOSS_ORDER) + len(names)))
    styles = {}
    for name in names:
        index = LOSS_ORDER.index(name) if name in LOSS_ORDER else next(others)
        styles[name] = {"color": f"C{index % 10}", "linestyle": LINESTYLES.get(name, "-")}
    return styles


def _order(name: str) -> tuple[int, str]:
    return (LOSS_ORDER.index(name) if name in LOSS_ORDER else len(LOSS_ORDER), name)


def _label_kinds(runs: list[BanditRun]) -> list[str]:
    return sorted({r.labels for r in runs}, key=lambda k: (k != "bradley_terry", k))


def training_figure(runs: list[BanditRun], beta: float | None = None) -> Figure | None:
    """R_mu, KL and off-support mass over training for the partial-support runs at one beta."""
    partial = [r for r in runs if r.mu != "full"]
    if not partial:
        return None
    betas = sorted({r.beta for r in partial})
    if beta is None:
        beta = 0.5 if 0.5 in betas else betas[len(betas) // 2]
    chosen = [r for r in partial if math.isclose(r.beta, beta)]
    if not chosen:
        raise ValueError(f"No partial-support run with beta={beta}; the sweep has beta in {betas}.")
    kinds, styles = _label_kinds(chosen), _styles(chosen)
    panels = [
        ("val/offline_reg", "R_mu = E_mu[rho^2] / 2  (symmetric log scale)", True),
        ("val/kl", "KL(pi || pi_ref)", False),
        ("val/off_support_mass", "pi's mass off the support of mu", False),
    ]
    figure = Figure(figsize=(15, 4.2 * len(kinds)), layout="constrained")
    axes = figure.subplots(len(kinds), len(panels), squeeze=False)
    for row, kind in enumerate(kinds):
        for col, (metric, title, log_y) in enumerate(panels):
            ax = axes[row][col]
            for run in sorted((r for r in chosen if r.labels == kind), key=lambda r: _order(r.loss)):
                steps, values = zip(*run.curve[metric])
                ax.plot(steps, values, **styles[run.loss], label=run.loss, linewidth=1.8)
            if log_y:  # symlog: linear below 1, so the value 0 at step 0 stays on the axis
                ax.set_yscale("symlog", linthresh=1.0)
                top = ax.get_ylim()[1]
                ax.yaxis.set_major_locator(FixedLocator([t for t in SYMLOG_TICKS if t <= top]))
                ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
            ax.set_title(f"{title}\n{kind.replace('_', '-')} labels", fontsize=10)
            ax.set_xlabel("training step")
            ax.grid(alpha=0.3)
    axes[0][0].legend(title="loss", fontsize=9)
    figure.suptitle(
        f"Tabular bandit, mu on part of the actions, beta = {beta:g}: the losses only see the support of mu",
        fontsize=12,
    )
    return figure


def kl_figure(runs: list[BanditRun]) -> Figure:
    """Final KL against beta and against beta * f''(0)/|f'(0)|, log-log, one colour per loss."""
    kinds, styles = _label_kinds(runs), _styles(runs)
    figure = Figure(figsize=(13, 4.6 * len(kinds)), layout="constrained")
    axes = figure.subplots(len(kinds), 2, squeeze=False)
    for row, kind in enumerate(kinds):
        for col, rescaled in enumerate((False, True)):
            ax = axes[row][col]
            for name, style in styles.items():
                points = sorted((r for r in runs if r.labels == kind and r.loss == name), key=lambda r: r.beta)
                if not points or (rescaled and points[0].ratio == 0):
                    continue
                xs = [r.beta * r.ratio if rescaled else r.beta for r in points]
                ys = [r.final("val/kl") for r in points]
                ax.plot(xs, ys, **style, linewidth=1.5, alpha=0.8, label=name)
                for x, y, run in zip(xs, ys, points):
                    ax.plot(
                        [x],
                        [y],
                        "o",
                        color=style["color"],
                        markersize=7,
                        markerfacecolor=style["color"] if run.settled() else "white",
                    )
            ax.set_xscale("log")
            ax.set_yscale("log")
            ticks = sorted({x for line in ax.get_lines() for x in line.get_xdata()})
            ax.xaxis.set_major_locator(FixedLocator(ticks))
            ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.grid(alpha=0.3, which="both")
            ax.set_ylabel("KL(pi || pi_ref) at the end of training")
            if rescaled:
                ax.set_xlabel("rescaled beta = beta * f''(0) / |f'(0)|")
                ax.set_title(
                    f"against the rescaled beta (hinge: f''(0) = 0, not shown)\n{kind.replace('_', '-')} labels",
                    fontsize=10,
                )
            else:
                ax.set_xlabel("beta")
                ax.set_title(f"against beta\n{kind.replace('_', '-')} labels", fontsize=10)
    handles = [Line2D([], [], **s, marker="o", label=n) for n, s in styles.items()]
    handles += [
        Line2D(
            [], [], color="grey", marker="o", linestyle="", label="KL settled (< 1% change in the last 20% of steps)"
        ),
        Line2D(
            [], [], color="grey", marker="o", markerfacecolor="white", linestyle="", label="KL still moving at the end"
        ),
    ]
    axes[0][0].legend(handles=handles, fontsize=9)
    figure.suptitle(
        "Tabular bandit: KL at the end of training; the Taylor expansion predicts the curves line "
        "up against the rescaled beta",
        fontsize=12,
    )
    return figure


def claims_markdown(runs: list[BanditRun]) -> str:
    """``bandit_claims.md``: best beta per loss (exact values, the report's fit), edge notes and the
    best-beta ratio against theory, for each kind of labels and of mu in the sweep."""
    metric = next((m for m in QUALITY if runs and all(m in r.curve for r in runs)), None)
    lines = ["# Bandit study: the paper's claims on exact values", ""]
    if metric is None:
        return "\n".join(lines + [f"_No quality metric ({' or '.join(QUALITY)}) was logged by every run._"]) + "\n"
    lines += [
        f"Quality: `{metric}` at the end of training, exact (no sampling, so no error bars). Theory: the best β "
        "moves as 1 / (f''(0)/|f'(0)|) between losses.",
        "",
    ]
    for kind in _label_kinds(runs):
        for mu in sorted({r.mu for r in runs if r.labels == kind}):
            chosen = [r for r in runs if r.labels == kind and r.mu == mu]
            curves, ratios = {}, {}
            for name in sorted({r.loss for r in chosen}, key=_order):
                points = sorted((r for r in chosen if r.loss == name), key=lambda r: r.beta)
                curves[name] = ([r.beta for r in points], [r.final(metric) for r in points])
                ratios[name] = points[0].ratio
            claims = exact_claims(curves, ratios)
            lines += [f"## {kind.replace('_', '-')} labels, mu = {mu}", ""]
            lines += [f"**Best-β shift:** {claim_two(claims)}", ""] + edge_warnings(claims)
            lines += best_beta_lines(claims, f"`{metric}`") + [""] + ratio_lines(claims) + [""]
    return "\n".join(lines).rstrip() + "\n"


def draw(sweep_dir: Path, beta: float | None = None) -> list[Path]:
    """Write the bandit figures into ``sweep_dir``; return their paths."""
    sweep_dir = Path(sweep_dir)
    runs = load_runs(sweep_dir)
    if not runs:
        raise SystemExit(
            f"No completed bandit run under {sweep_dir}; run e.g. "
            "python -m gpo_lab -m --config-dir sweeps --config-name bandit"
        )
    written = []
    for figure, name in ((training_figure(runs, beta), TRAINING_FIGURE), (kl_figure(runs), KL_FIGURE)):
        if figure is not None:
            figure.savefig(sweep_dir / name, dpi=110)
            written.append(sweep_dir / name)
    (sweep_dir / CLAIMS_FILE).write_text(claims_markdown(runs))
    written.append(sweep_dir / CLAIMS_FILE)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m gpo_lab.report.bandit",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("sweep_dir", type=Path, help="a sweep directory, e.g. multirun/bandit")
    parser.add_argument(
        "--beta",
        type=float,
        default=None,
        help="beta of the runs in the training figure (default 0.5 if swept, else the median)",
    )
    args = parser.parse_args(argv)
    try:
        written = draw(args.sweep_dir, args.beta)
    except ValueError as error:
        parser.error(str(error))
    for path in written:
        print(path)


if __name__ == "__main__":
    main()
